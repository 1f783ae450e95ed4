//! The command line.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "umuve-dispatch",
    version,
    about = "Realtime dispatch engine of Umuve"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create an admin (or operator) account that signs in with email and password.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Also read from UMUVE_ADMIN_PASSWORD, which keeps it out of the process list.
        #[arg(long, env = "UMUVE_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, value_enum, default_value_t = StaffRole::Admin)]
        role: StaffRole,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StaffRole {
    Admin,
    Operator,
}
