//! Routes, one module per resource. Each handler carries its `#[utoipa::path]`, and the app is
//! assembled through utoipa-actix-web, so the OpenAPI document lists exactly the routes served.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::http::ErrorBody;

pub mod admin;
pub mod auth;
pub mod devices;
pub mod drivers;
pub mod jobs;
pub mod me;
pub mod notifications;
pub mod offers;
pub mod ops;
pub mod payments;
pub mod service_area;

/// Registers every route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::openapi_json)
        .service(ops::metrics)
        .service(crate::ws::upgrade)
        .service(service_area::service_area)
        .service(service_area::check)
        .service(jobs::create_job)
        .service(jobs::list_jobs)
        .service(jobs::get_job)
        .service(jobs::cancel_job)
        .service(jobs::move_job)
        .service(jobs::assign_job)
        .service(payments::payment_intent)
        .service(payments::stripe_webhook)
        .service(payments::connect_account)
        .service(payments::list_outbox)
        .service(payments::retry_outbox)
        .service(notifications::list_notifications)
        .service(notifications::retry_notification)
        .service(offers::accept_offer)
        .service(offers::decline_offer)
        .service(drivers::set_availability)
        .service(drivers::nearby)
        .service(drivers::live)
        .service(auth::sms_send)
        .service(auth::sms_verify)
        .service(auth::login)
        .service(auth::apple)
        .service(auth::password_forgot)
        .service(auth::password_reset)
        .service(me::get_me)
        .service(me::update_me)
        .service(devices::register_device)
        .service(devices::remove_device)
        .service(admin::seed)
        .service(admin::create_user)
        .service(admin::approve_driver)
        .service(admin::list_users);
}

/// The document's frame; paths and schemas are collected from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "umuve-dispatch",
        description = "Realtime dispatch engine of Umuve: auth, jobs, live tracking, dispatch. \
                       Errors are always {\"error\": {\"code\", \"message\"}}.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the authenticated operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
