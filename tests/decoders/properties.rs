//! What must hold for any input to the decoders of untrusted data: no panic, every failure a
//! clear refusal, every success a valid value. Shared by the proptests (`tests/decoders.rs`)
//! and the fuzz targets (`fuzz/`), so both check the same things.

use bytes::Bytes;
use img_parts::png::Png;
use img_parts::webp::WebP;
use umuve_actors::geo::{BBox, LatLng};
use umuve_actors::realtime::model::{JobStatus, LoadSize, Mover};
use umuve_dispatch::domain::{EmailAddress, Password, PersonName, Phone};
use umuve_dispatch::http::pagination;
use umuve_dispatch::uploads::{ImageKind, image, server_made_kind};
use umuve_dispatch::ws::protocol::{self, Command, Position};

fn valid_position(p: &Position) {
    let (lat, lng) = (p.at.lat(), p.at.lng());
    assert!(lat.is_finite() && (-90.0..=90.0).contains(&lat), "{p:?}");
    assert!(lng.is_finite() && (-180.0..=180.0).contains(&lng), "{p:?}");
    if let Some(heading) = p.heading_deg {
        assert!((0.0..=360.0).contains(&heading), "{p:?}");
    }
    for value in [p.speed_mps, p.accuracy_m].into_iter().flatten() {
        assert!(value.is_finite() && value >= 0.0, "{p:?}");
    }
    if let Some(ts) = p.ts {
        assert!(ts > 0, "{p:?}");
    }
}

/// A client WebSocket text frame: decoded into a valid command, or refused with an error
/// code and a message (what the client then gets as `{"type":"error"}`).
pub fn client_frame(text: &str) {
    let raw = match protocol::parse(text) {
        Ok(raw) => raw,
        Err((_id, refusal)) => {
            assert_eq!(refusal.code, "bad_request", "{text:?}");
            assert!(!refusal.message.is_empty());
            return;
        }
    };
    match raw.command() {
        Ok(Command::Location(p) | Command::Locations(p)) => valid_position(&p),
        Ok(Command::MapSubscribe(Some(bbox))) => {
            assert!(bbox.min_lat <= bbox.max_lat && bbox.min_lng <= bbox.max_lng)
        }
        Ok(_) => {}
        Err(refusal) => {
            assert!(
                ["bad_request", "unknown_type"].contains(&refusal.code),
                "{text:?}: {refusal:?}"
            );
            assert!(!refusal.message.is_empty());
        }
    }
}

/// A string where the API takes a phone, an email address, a name, a password, a status, a
/// load size or a list cursor.
pub fn domain_text(input: &str) {
    if let Ok(phone) = Phone::parse(input) {
        let e164 = phone.as_str();
        assert!(e164.starts_with('+'), "{input:?} -> {e164}");
        assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{e164}");
        assert!((9..=16).contains(&e164.len()), "{e164}");
        assert_eq!(
            Phone::parse(e164).map(|p| p.as_str().to_owned()),
            Ok(e164.to_owned())
        );
    }
    if let Ok(email) = EmailAddress::parse(input) {
        let address = email.as_str();
        assert!(address.contains('@'), "{address}");
        assert!(!address.chars().any(char::is_whitespace), "{address:?}");
        assert_eq!(
            EmailAddress::parse(address).map(|e| e.as_str().to_owned()),
            Ok(address.to_owned())
        );
    }
    if let Ok(name) = PersonName::parse(input) {
        assert!(!name.as_str().is_empty());
        assert!(!name.as_str().chars().any(char::is_control), "{name:?}");
    }
    let _ = Password::parse(input.to_owned());
    if let Some(status) = JobStatus::parse(input) {
        assert_eq!(status.as_str(), input);
    }
    if let Some(size) = LoadSize::parse(input) {
        assert_eq!(size.as_str(), input);
    }
    if let Ok((limit, _)) = pagination::page(None, Some(input)) {
        assert_eq!(limit, pagination::DEFAULT_LIMIT);
    }
    if let Some(kind) = server_made_kind(input) {
        assert!(!input.contains('/') && !input.contains('\0') && !input.contains(".."));
        assert!(input.ends_with(kind.extension()));
    }
}

/// Coordinates as clients send them (any floats, NaN and infinities included).
pub fn coordinates(lat: f64, lng: f64, bbox: [f64; 4]) {
    let in_range = lat.is_finite()
        && lng.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lng);
    assert_eq!(LatLng::new(lat, lng).is_ok(), in_range, "({lat}, {lng})");
    if let Ok(bbox) = BBox::parse(bbox) {
        assert!(bbox.min_lat <= bbox.max_lat && bbox.min_lng <= bbox.max_lng);
        assert!(LatLng::new(bbox.min_lat, bbox.min_lng).is_ok());
        assert!(LatLng::new(bbox.max_lat, bbox.max_lng).is_ok());
    }
}

/// A status move asked for by a mover (indexes into the statuses and movers).
pub fn status_move(from: usize, to: usize, mover: usize) {
    let statuses = JobStatus::ALL;
    let movers = [
        Mover::Driver,
        Mover::Customer,
        Mover::Dispatcher,
        Mover::Engine,
    ];
    let (from, to) = (
        statuses[from % statuses.len()],
        statuses[to % statuses.len()],
    );
    let mover = movers[mover % movers.len()];
    let allowed = from.may_move(to, mover);
    if allowed {
        assert_ne!(from, to, "no move to the same status");
        assert!(!from.is_final(), "nothing leaves {from:?}");
        // Whoever may make a move, a dispatcher may make it too.
        assert!(from.may_move(to, Mover::Dispatcher));
    }
    if mover == Mover::Customer && allowed {
        assert_eq!(to, JobStatus::Cancelled);
    }
}

/// An uploaded file: refused, or typed by its bytes and cleaned into an image of that type
/// that holds no metadata block, that cleaning again leaves as it is, and that is never larger
/// than what was sent. Returns whether it was accepted.
pub fn uploaded_file(bytes: &[u8]) -> bool {
    let Some(kind) = ImageKind::sniff(bytes) else {
        return false;
    };
    let Ok(cleaned) = image::without_metadata(kind, Bytes::copy_from_slice(bytes)) else {
        return false;
    };
    assert_eq!(ImageKind::sniff(&cleaned), Some(kind));
    assert!(
        cleaned.len() <= bytes.len(),
        "{} -> {}",
        bytes.len(),
        cleaned.len()
    );
    match kind {
        ImageKind::Jpeg => jpeg_has_no_metadata(&cleaned),
        ImageKind::Png => {
            let png = Png::from_bytes(cleaned.clone()).expect("a cleaned PNG parses");
            for chunk in png.chunks() {
                let kind = chunk.kind();
                assert!(
                    !matches!(&kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME"),
                    "{kind:?} left in a cleaned PNG"
                );
            }
        }
        ImageKind::Webp => {
            let webp = WebP::from_bytes(cleaned.clone()).expect("a cleaned WebP parses");
            assert!(!webp.has_chunk(*b"EXIF") && !webp.has_chunk(*b"XMP "));
        }
    }
    let again = image::without_metadata(kind, cleaned.clone()).expect("a cleaned image parses");
    assert_eq!(again, cleaned, "cleaning is idempotent");
    true
}

/// Walks a cleaned JPEG's markers: no APP segment but JFIF (without a thumbnail), ICC and
/// Adobe, no comment, and nothing after the end of the image.
fn jpeg_has_no_metadata(jpeg: &[u8]) {
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let mut at = 2;
    let mut in_scan = false;
    while at + 1 < jpeg.len() {
        if jpeg[at] != 0xFF {
            assert!(in_scan, "stray byte at {at} before the first scan");
            at += 1;
            continue;
        }
        let marker = jpeg[at + 1];
        match marker {
            0x00 | 0xD0..=0xD7 | 0xFF if in_scan => at += 2,
            0xD9 => {
                assert_eq!(at + 2, jpeg.len(), "bytes after the end of the image");
                return;
            }
            _ => {
                let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
                let contents = &jpeg[at + 4..at + 2 + length];
                match marker {
                    0xE0 => assert!(
                        contents.starts_with(b"JFIF\0")
                            && contents.len() == 14
                            && contents[12..] == [0, 0],
                        "APP0 other than a bare JFIF header"
                    ),
                    0xE2 => assert!(
                        contents.starts_with(b"ICC_PROFILE\0"),
                        "APP2 other than ICC"
                    ),
                    0xEE => assert!(contents.starts_with(b"Adobe"), "APP14 other than Adobe"),
                    0xE1..=0xEF | 0xFE => panic!("metadata segment {marker:#x} left"),
                    0xDA => in_scan = true,
                    _ => {}
                }
                at += 2 + length;
            }
        }
    }
    panic!("a cleaned JPEG without its end marker");
}
