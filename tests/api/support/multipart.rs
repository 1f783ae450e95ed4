//! `multipart/form-data` bodies, built by hand so tests control every byte (and can send part
//! of one).

pub const BOUNDARY: &str = "umuve-test-boundary-7MA4YWxkTrZu0gW";

/// The `Content-Type` of bodies built here.
pub fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The headers of one file part: what comes before its bytes.
pub fn part_head(field: &str, file_name: &str, content_type: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; \
         filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
}

/// What ends the body after the last part's bytes.
pub fn end() -> String {
    format!("\r\n--{BOUNDARY}--\r\n")
}

/// A whole body: (field, file name, declared type, bytes) per part.
pub fn body(parts: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file_name, content_type, bytes) in parts {
        body.extend_from_slice(part_head(field, file_name, content_type).as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}
