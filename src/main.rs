use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use umuve_actors::clock::{Clock, SystemClock};
use umuve_dispatch::cli::{Cli, Command, StaffRole};
use umuve_dispatch::config::Settings;
use umuve_dispatch::domain::{EmailAddress, Password, Role};
use umuve_dispatch::startup::Application;
use umuve_dispatch::storage::users::{self, NewUser};
use umuve_dispatch::storage::{Db, is_unique_violation};
use umuve_dispatch::{auth::passwords::PasswordHasher, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match Settings::from_env() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("umuve-dispatch: {error}");
            return ExitCode::from(2);
        }
    };
    let settings = loaded.settings;
    // Sentry first, so that start-up failures are reported too.
    let _sentry = telemetry::init_sentry(&settings);
    telemetry::init_logging(settings.log_format, settings.sentry.is_some());
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    // One TLS provider for every client (reqwest, sqlx), chosen explicitly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let outcome = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::CreateAdmin {
                email,
                password,
                role,
            } => create_admin(settings, &email, password, role).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("umuve-dispatch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let database = settings.database_url.redacted();
    let app = Application::build(settings, Arc::new(SystemClock)).await?;
    tracing::info!(%database, "listening on http://{}", app.local_addr());
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn open_database(settings: &Settings) -> anyhow::Result<Db> {
    let db = Db::connect(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {:?}", settings.database_url))?;
    db.migrate().await.context("cannot migrate the database")?;
    Ok(db)
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = open_database(&settings).await?;
    tracing::info!(database = %settings.database_url.redacted(), "migrations applied");
    db.close().await;
    Ok(())
}

async fn create_admin(
    settings: Settings,
    email: &str,
    password: String,
    role: StaffRole,
) -> anyhow::Result<()> {
    let email = EmailAddress::parse(email).map_err(anyhow::Error::msg)?;
    let password = Password::parse(password).map_err(anyhow::Error::msg)?;
    let role = match role {
        StaffRole::Admin => Role::Admin,
        StaffRole::Operator => Role::Operator,
    };
    let db = open_database(&settings).await?;
    let hash = PasswordHasher::new(1).hash(password.expose()).await?;
    let new = NewUser {
        role: Some(role),
        email: Some(&email),
        password_hash: Some(hash),
        approved: true,
        ..NewUser::default()
    };
    let created = users::insert(&db, new, SystemClock.now()).await;
    db.close().await;
    match created {
        Ok(user) => {
            println!("created {} {} ({})", role, email, user.id);
            Ok(())
        }
        Err(error) if is_unique_violation(&error) => {
            anyhow::bail!("an account with the email {email} exists already")
        }
        Err(error) => Err(error.into()),
    }
}
