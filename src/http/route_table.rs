//! Which paths exist and with which methods, derived from the OpenAPI document (itself generated
//! from the handlers), so an unknown path answers 404 and a known path with the wrong method 405.

use actix_web::HttpRequest;
use utoipa::openapi::OpenApi;

use super::ApiError;

#[derive(Debug, Clone)]
struct Route {
    /// `None` for a `{parameter}` segment.
    segments: Vec<Option<String>>,
    methods: Vec<String>,
}

/// Path templates with their methods.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn from_openapi(api: &OpenApi) -> Self {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let segments = template
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                    .collect();
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter(|(_, present)| *present)
                .map(|(name, _)| name.to_owned())
                .collect();
                Route { segments, methods }
            })
            .collect();
        Self { routes }
    }

    /// The methods a concrete path accepts; empty when no route has this path. Paths match
    /// exactly, as the router matches them (`/api/me/` is not `/api/me`).
    pub fn methods_for(&self, path: &str) -> Vec<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut methods: Vec<String> = self
            .routes
            .iter()
            .filter(|route| {
                route.segments.len() == parts.len()
                    && route
                        .segments
                        .iter()
                        .zip(&parts)
                        .all(|(segment, part)| match segment {
                            Some(literal) => literal == part,
                            None => !part.is_empty(),
                        })
            })
            .flat_map(|route| route.methods.iter().cloned())
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }

    /// The answer for a request no route took.
    pub fn unmatched(&self, req: &HttpRequest) -> ApiError {
        let methods = self.methods_for(req.path());
        if methods.is_empty() {
            ApiError::NotFound(format!("no route for {}", req.path()))
        } else {
            ApiError::MethodNotAllowed {
                message: format!(
                    "{} is not allowed here; allowed: {}",
                    req.method(),
                    methods.join(", ")
                ),
                allow: methods.join(", "),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_paths_match() {
        let table = RouteTable::from_openapi(&crate::startup::openapi_document());
        assert_eq!(table.methods_for("/api/me"), ["GET", "PATCH"]);
        assert_eq!(table.methods_for("/api/devices/abc"), ["DELETE"]);
        for unknown in [
            "/api/me/",
            "//api/me",
            "/api/devices/",
            "/api/devices/a/b",
            "/healthz/",
            "/",
        ] {
            assert!(table.methods_for(unknown).is_empty(), "{unknown}");
        }
    }
}
