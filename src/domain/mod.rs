//! Values parsed once at the boundary: once a `Phone` or an `EmailAddress` exists, it is valid.

mod email;
mod password;
mod phone;
mod role;
pub mod text;

pub use email::EmailAddress;
pub use password::Password;
pub use phone::Phone;
pub use role::Role;
pub use text::PersonName;
