//! The HTTP edge: the error model, request logging and the route table used for 404/405.

pub mod client_ip;
pub mod edge;
pub mod error;
pub mod pagination;
pub mod route_table;

pub use error::{ApiError, ErrorBody};
