//! Property tests over the decoders of untrusted input: client WebSocket frames, the domain
//! types (phone, email, coordinates, status moves, cursors) and uploaded files. The properties
//! live in `decoders/properties.rs`, shared with the fuzz targets in `fuzz/`.

mod decoders {
    pub mod properties;
}

use decoders::properties;
use proptest::prelude::*;
use serde_json::{Value, json};

const TYPES: [&str; 10] = [
    "location",
    "locations",
    "availability",
    "offer.accept",
    "offer.decline",
    "subscribe",
    "unsubscribe",
    "map.subscribe",
    "map.unsubscribe",
    "no.such.type",
];
const FIELDS: [&str; 13] = [
    "id",
    "lat",
    "lng",
    "heading_deg",
    "speed_mps",
    "accuracy_m",
    "ts",
    "points",
    "available",
    "offer_id",
    "job_id",
    "bbox",
    "extra",
];

/// Any JSON value, a few levels deep, with the numbers clients get wrong.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-200.0..200.0f64).prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::from),
        Just(json!("6f1c2a52-9a3e-4b38-8d0f-0c3a3f4b2b11")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(&FIELDS[..]), inner), 0..6).prop_map(
                |fields| Value::Object(
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )
            ),
        ]
    })
}

/// A frame shaped like a client message: a known (or unknown) type and random fields.
fn client_message() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&TYPES[..]),
        prop::collection::vec((prop::sample::select(&FIELDS[..]), json_value()), 0..8),
    )
        .prop_map(|(kind, fields)| {
            let mut object = serde_json::Map::new();
            object.insert("type".into(), json!(kind));
            for (name, value) in fields {
                object.insert(name.to_owned(), value);
            }
            Value::Object(object).to_string()
        })
}

/// Real images, cut and changed at random.
fn mangled_image() -> impl Strategy<Value = Vec<u8>> {
    const IMAGES: [&[u8]; 3] = [
        include_bytes!("data/photos/junk-with-gps.jpg"),
        include_bytes!("data/photos/junk.png"),
        include_bytes!("data/photos/junk.webp"),
    ];
    (
        0..IMAGES.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(which, changes, cut)| {
            let mut bytes = IMAGES[which].to_vec();
            for (at, value) in changes {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(12 + cut.index(bytes.len() - 11));
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn client_frames_are_decoded_or_refused(text in client_message()) {
        properties::client_frame(&text);
    }

    #[test]
    fn any_text_frame_is_decoded_or_refused(text in "\\PC{0,200}") {
        properties::client_frame(&text);
    }

    #[test]
    fn domain_text_is_parsed_or_refused(text in "\\PC{0,60}|[+0-9() .-]{0,20}|[a-z.+@-]{0,30}") {
        properties::domain_text(&text);
    }

    #[test]
    fn coordinates_are_accepted_exactly_in_range(
        lat in prop_oneof![any::<f64>(), -91.0..91.0f64],
        lng in prop_oneof![any::<f64>(), -181.0..181.0f64],
        bbox in prop::array::uniform4(prop_oneof![any::<f64>(), -181.0..181.0f64]),
    ) {
        properties::coordinates(lat, lng, bbox);
    }

    #[test]
    fn status_moves_follow_the_rules(from in 0usize..20, to in 0usize..20, mover in 0usize..8) {
        properties::status_move(from, to, mover);
    }

    #[test]
    fn uploaded_files_are_refused_or_cleaned(bytes in mangled_image()) {
        properties::uploaded_file(&bytes);
    }

    #[test]
    fn images_with_metadata_blocks_added_anywhere_are_cleaned(
        at in any::<prop::sample::Index>(),
        marker in 0xE0u8..=0xEF,
        payload in "[A-Za-z0-9 ]{0,40}",
    ) {
        // A metadata segment slipped in at any segment boundary of the camera's JPEG.
        let jpeg: &[u8] = include_bytes!("data/photos/junk-with-gps.jpg");
        let boundaries: Vec<usize> = (2..jpeg.len() - 1)
            .filter(|&i| jpeg[i] == 0xFF && jpeg[i + 1] != 0x00 && jpeg[i + 1] != 0xFF && !(0xD0..=0xD7).contains(&jpeg[i + 1]))
            .collect();
        let insert_at = boundaries[at.index(boundaries.len())];
        let mut bytes = jpeg[..insert_at].to_vec();
        bytes.extend_from_slice(&[0xFF, marker]);
        bytes.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(payload.as_bytes());
        bytes.extend_from_slice(&jpeg[insert_at..]);
        prop_assert!(properties::uploaded_file(&bytes), "refused a valid JPEG");
    }

    #[test]
    fn random_bytes_are_never_taken_for_an_image(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(!properties::uploaded_file(&bytes), "accepted {:?}", bytes);
    }

    #[test]
    fn random_bytes_behind_image_magic_are_refused_or_cleaned(
        magic in prop::sample::select(vec![&b"\xFF\xD8\xFF"[..], b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP"]),
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&rest);
        properties::uploaded_file(&bytes);
    }
}

#[test]
fn the_sample_images_pass_cleaning() {
    for bytes in [
        &include_bytes!("data/photos/junk-with-gps.jpg")[..],
        include_bytes!("data/photos/junk.png"),
        include_bytes!("data/photos/junk.webp"),
    ] {
        properties::uploaded_file(bytes);
        let kind = umuve_dispatch::uploads::ImageKind::sniff(bytes).unwrap();
        assert!(
            umuve_dispatch::uploads::image::without_metadata(
                kind,
                bytes::Bytes::copy_from_slice(bytes)
            )
            .is_ok()
        );
    }
}
