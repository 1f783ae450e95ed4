//! The words of outbound messages.

pub mod job_messages;

use umuve_actors::outbound::{Email, EmailKind};

/// The SMS that carries a login code.
pub fn sms_login_code(code: &str) -> String {
    format!("Your Umuve code is {code}. It expires in 10 minutes. Never share it.")
}

pub(crate) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The password-reset email.
pub fn password_reset_email(to: &str, link: &str) -> Email {
    let text = format!(
        "Someone asked to reset the password of your Umuve account.\n\n\
         To choose a new password, open this link within one hour:\n{link}\n\n\
         If it was not you, ignore this email; your password stays as it is."
    );
    let link_html = escape_html(link);
    let html = format!(
        "<p>Someone asked to reset the password of your Umuve account.</p>\
         <p><a href=\"{link_html}\">Choose a new password</a> (the link works for one hour).</p>\
         <p>If it was not you, ignore this email; your password stays as it is.</p>"
    );
    Email {
        to: to.to_owned(),
        subject: "Reset your Umuve password".into(),
        text,
        html,
        kind: EmailKind::PasswordReset,
        idempotency_key: None,
    }
}
