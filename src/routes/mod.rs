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
pub mod photos;
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
        .service(photos::upload_photos)
        .service(photos::serve_photo)
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

/// Documents the error answers every operation of a kind can give, whatever its handler lists:
/// a body that is not JSON (415), malformed or too large (400, 413), a path parameter that does
/// not parse (400), and a rate limit where one applies (429). Run on the assembled document.
pub fn document_common_errors(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{Operation, ParameterIn};
    use utoipa::openapi::{RefOr, ResponseBuilder};

    fn add(operation: &mut Operation, status: &str, description: &str) {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }

    for (path, item) in api.paths.paths.iter_mut() {
        let operations = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("PATCH", &mut item.patch),
            ("DELETE", &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else {
                continue;
            };
            let json_body = match &operation.request_body {
                Some(RefOr::T(body)) => body.content.contains_key("application/json"),
                _ => false,
            };
            if json_body {
                add(operation, "400", "Malformed JSON or an invalid field");
                add(operation, "413", "Body over 1 MiB");
                add(operation, "415", "Content-Type is not application/json");
            }
            let path_parameters =
                operation.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path)),
                );
            if path_parameters {
                add(operation, "400", "A path parameter that does not parse");
            }
            let has_query =
                operation.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)),
                );
            if has_query {
                add(operation, "400", "An invalid query parameter");
            }
            if RATE_LIMITED.contains(&(method, path.as_str())) {
                add(operation, "429", "Rate limited; see Retry-After");
            }
        }
    }
}

/// Operations with a rate limit of their own (see `crate::rate_limit`).
const RATE_LIMITED: [(&str, &str); 10] = [
    ("POST", "/api/auth/sms/send"),
    ("POST", "/api/auth/sms/verify"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/apple"),
    ("POST", "/api/auth/password/forgot"),
    ("POST", "/api/auth/password/reset"),
    ("POST", "/api/admin/seed"),
    ("POST", "/api/jobs"),
    ("POST", "/api/jobs/{id}/photos"),
    ("GET", "/ws"),
];
