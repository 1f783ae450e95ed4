//! What an uploaded file is, decided by its bytes, and the same image without the metadata that
//! can tell where and by whom it was taken (EXIF with GPS, XMP, IPTC, comments, embedded
//! secondary images). The pixels are not decoded or re-encoded: only metadata blocks go.

use bytes::Bytes;
use img_parts::jpeg::{Jpeg, JpegSegment, markers};
use img_parts::png::Png;
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::{CHUNK_ANMF, CHUNK_VP8, CHUNK_VP8L, CHUNK_VP8X, WebP};

/// The image types accepted, by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
}

/// Bytes needed to tell the kinds apart (WebP's signature ends at byte 12).
pub const SNIFF_LEN: usize = 12;

impl ImageKind {
    /// The kind whose signature `head` starts with; `None` for anything else (or too short).
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if head.len() >= SNIFF_LEN && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            "jpg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }
}

/// JPEG APP2 segments that carry a colour profile (kept) start with this.
const ICC_SIGNATURE: &[u8] = b"ICC_PROFILE\0";
/// APP0 "JFIF": density, and maybe a thumbnail (which goes).
const JFIF_SIGNATURE: &[u8] = b"JFIF\0";
/// The JFIF header without a thumbnail: signature, version, units, densities, 0×0 thumbnail.
const JFIF_HEADER_LEN: usize = 14;
/// APP14 "Adobe" says how to convert colours; without it CMYK images decode wrongly.
const ADOBE_SIGNATURE: &[u8] = b"Adobe";
/// JPEG comment marker (img-parts names only the standard ones it parses).
const COM: u8 = 0xFE;

/// PNG chunks kept: the critical ones and those that say how to show the pixels. Text, eXIf,
/// time and private chunks go.
const PNG_KEPT: [&[u8; 4]; 12] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"pHYs", b"bKGD",
];

/// WebP chunks kept: image data, animation, alpha, colour profile.
const WEBP_KEPT: [[u8; 4]; 7] = [
    *b"VP8 ", *b"VP8L", *b"VP8X", *b"ALPH", *b"ANIM", *b"ANMF", *b"ICCP",
];
/// VP8X flags announcing EXIF and XMP chunks (cleared with the chunks).
const VP8X_EXIF_AND_XMP: u8 = 0x08 | 0x04;

/// The image without location or other metadata, or why it is not a well-formed image of `kind`.
pub fn without_metadata(kind: ImageKind, file: Bytes) -> Result<Bytes, String> {
    match kind {
        ImageKind::Jpeg => jpeg_without_metadata(file),
        ImageKind::Png => png_without_metadata(file),
        ImageKind::Webp => webp_without_metadata(file),
    }
}

/// Whether a JPEG marker starts a metadata segment: APP0–APP15 and comments.
fn is_metadata_marker(marker: u8) -> bool {
    (markers::APP0..=markers::APP15).contains(&marker) || marker == COM
}

fn jpeg_without_metadata(file: Bytes) -> Result<Bytes, String> {
    let mut jpeg = Jpeg::from_bytes(file).map_err(|e| format!("not a valid JPEG: {e}"))?;
    let segments = jpeg.segments_mut();
    if !segments.iter().any(JpegSegment::has_entropy) {
        return Err("not a valid JPEG: no image data".into());
    }
    let mut kept = Vec::with_capacity(segments.len());
    for segment in segments.drain(..) {
        let contents = segment.contents();
        match segment.marker() {
            markers::APP0
                if contents.starts_with(JFIF_SIGNATURE) && contents.len() >= JFIF_HEADER_LEN =>
            {
                let mut header = contents[..JFIF_HEADER_LEN].to_vec();
                header[12] = 0;
                header[13] = 0;
                kept.push(JpegSegment::new_with_contents(markers::APP0, header.into()));
            }
            markers::APP2 if contents.starts_with(ICC_SIGNATURE) => kept.push(segment),
            markers::APP14 if contents.starts_with(ADOBE_SIGNATURE) => kept.push(segment),
            // EXIF/XMP (APP1), IPTC (APP13), maker and vendor blocks, comments.
            marker if is_metadata_marker(marker) => {}
            _ => kept.push(segment),
        }
    }
    // The scans that follow the first one, without metadata segments between them, up to the
    // image's end: what follows it (secondary images of a multi-picture file with their own
    // EXIF, appended bytes) goes too.
    let last = kept.len() - 1;
    if kept[last].has_entropy() {
        let scan = &kept[last];
        // img-parts has no getter for a scan's data: it follows the encoded header.
        let encoded = scan.clone().encoder().bytes();
        let entropy = &encoded[4 + scan.contents().len()..];
        let image = primary_image(entropy)
            .ok_or_else(|| "not a valid JPEG: the image data has no end".to_owned())?;
        kept[last] =
            JpegSegment::new_with_entropy(scan.marker(), scan.contents().clone(), image.into());
    }
    *jpeg.segments_mut() = kept;
    Ok(jpeg.encoder().bytes())
}

/// The scan data of a JPEG (everything after the first scan header) up to and including the
/// first EOI marker outside a segment, with the metadata segments between scans left out.
/// Entropy-coded bytes never hold a bare 0xFF (it is stuffed as FF 00, or a restart marker
/// FF D0–D7); the segments between the scans of a progressive image have lengths.
fn primary_image(entropy: &[u8]) -> Option<Vec<u8>> {
    let mut image = Vec::with_capacity(entropy.len());
    let mut at = 0;
    while at + 1 < entropy.len() {
        if entropy[at] != 0xFF {
            image.push(entropy[at]);
            at += 1;
            continue;
        }
        match entropy[at + 1] {
            0x00 | 0xD0..=0xD7 => {
                image.extend_from_slice(&entropy[at..at + 2]);
                at += 2;
            }
            // Fill bytes before a marker.
            0xFF => at += 1,
            markers::EOI => {
                image.extend_from_slice(&entropy[at..at + 2]);
                return Some(image);
            }
            marker => {
                let length = entropy.get(at + 2..at + 4)?;
                let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
                let segment = entropy.get(at..at + 2 + length).filter(|_| length >= 2)?;
                if !is_metadata_marker(marker) {
                    image.extend_from_slice(segment);
                }
                at += 2 + length;
            }
        }
    }
    None
}

fn png_without_metadata(file: Bytes) -> Result<Bytes, String> {
    let mut png = Png::from_bytes(file).map_err(|e| format!("not a valid PNG: {e}"))?;
    let chunks = png.chunks_mut();
    if chunks.first().map(|c| c.kind()) != Some(*b"IHDR")
        || chunks.last().map(|c| c.kind()) != Some(*b"IEND")
        || !chunks.iter().any(|c| c.kind() == *b"IDAT")
    {
        return Err("not a valid PNG: IHDR, IDAT or IEND missing".into());
    }
    // An uppercase first letter marks a critical chunk: one a decoder must understand.
    if let Some(unknown) = chunks
        .iter()
        .map(|c| c.kind())
        .find(|kind| kind[0].is_ascii_uppercase() && !PNG_KEPT.contains(&kind))
    {
        return Err(format!(
            "not a valid PNG: unknown critical chunk {:?}",
            String::from_utf8_lossy(&unknown)
        ));
    }
    chunks.retain(|chunk| PNG_KEPT.contains(&&chunk.kind()));
    Ok(png.encoder().bytes())
}

fn webp_without_metadata(file: Bytes) -> Result<Bytes, String> {
    let mut webp = WebP::from_bytes(file).map_err(|e| format!("not a valid WebP: {e}"))?;
    let image_data = [CHUNK_VP8, CHUNK_VP8L, CHUNK_ANMF];
    if !webp.chunks().iter().any(|c| image_data.contains(&c.id())) {
        return Err("not a valid WebP: no image data".into());
    }
    let chunks = webp.chunks_mut();
    chunks.retain(|chunk| WEBP_KEPT.contains(&chunk.id()));
    for chunk in chunks.iter_mut() {
        if chunk.id() == CHUNK_VP8X
            && let Some(data) = chunk.content().data()
            && !data.is_empty()
        {
            let mut flags = data.to_vec();
            flags[0] &= !VP8X_EXIF_AND_XMP;
            *chunk = RiffChunk::new(CHUNK_VP8X, RiffContent::Data(flags.into()));
        }
    }
    Ok(webp.encoder().bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small JPEG as a phone writes it: EXIF with GPS and the camera's make and model.
    const CAMERA_JPEG: &[u8] = include_bytes!("../../tests/data/photos/junk-with-gps.jpg");

    /// The camera's JPEG with a comment after its start and a script after its end.
    fn with_comment_and_trailer() -> Vec<u8> {
        let mut file = CAMERA_JPEG[..2].to_vec();
        file.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x09]);
        file.extend_from_slice(b"comment");
        file.extend_from_slice(&CAMERA_JPEG[2..]);
        file.extend_from_slice(b"<?php system($_GET['c']); ?>");
        file
    }

    /// From the first scan to the end of the image: the picture itself.
    fn scan_data(jpeg: &[u8]) -> &[u8] {
        let start = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let end = jpeg.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
        &jpeg[start..end + 2]
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn kinds_are_told_by_their_bytes() {
        assert_eq!(ImageKind::sniff(CAMERA_JPEG), Some(ImageKind::Jpeg));
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageKind::Png)
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(ImageKind::sniff(b"<?php echo 1; ?>"), None);
        assert_eq!(ImageKind::sniff(b"GIF89a\x01\0\x01\0\0\0"), None);
        assert_eq!(ImageKind::sniff(&[0xFF, 0xD8]), None);
    }

    #[test]
    fn a_jpeg_loses_exif_comments_and_what_follows_the_image() {
        let file = with_comment_and_trailer();
        assert!(contains(&file, b"Exif\0\0") && contains(&file, b"iPhone"));
        let clean = without_metadata(ImageKind::Jpeg, Bytes::from(file)).unwrap();
        for gone in [&b"Exif"[..], b"iPhone", b"Apple", b"comment", b"<?php"] {
            assert!(
                !contains(&clean, gone),
                "{:?} is still there",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(clean.starts_with(&[0xFF, 0xD8]) && clean.ends_with(&[0xFF, 0xD9]));
        assert_eq!(
            scan_data(&clean),
            scan_data(CAMERA_JPEG),
            "the picture is untouched"
        );
        assert_eq!(
            without_metadata(ImageKind::Jpeg, clean.clone()).unwrap(),
            clean,
            "cleaning again changes nothing"
        );
    }

    #[test]
    fn metadata_between_scans_and_jfif_thumbnails_go() {
        // An APP1 segment just before the end marker, where a progressive image has its
        // later scans, and a JFIF header that carries a 1×1 thumbnail.
        let end = CAMERA_JPEG.len() - 2;
        let mut file = CAMERA_JPEG[..2].to_vec();
        let mut jfif = b"JFIF\0\x01\x01\0\0\x01\0\x01\x01\x01".to_vec();
        jfif.extend_from_slice(b"RGB");
        file.extend_from_slice(&[0xFF, 0xE0]);
        file.extend_from_slice(&((jfif.len() + 2) as u16).to_be_bytes());
        file.extend_from_slice(&jfif);
        file.extend_from_slice(&CAMERA_JPEG[2..end]);
        file.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x0D]);
        file.extend_from_slice(b"GPS 25.76 N");
        file.extend_from_slice(&[0xFF, 0xD9]);
        let clean = without_metadata(ImageKind::Jpeg, Bytes::from(file)).unwrap();
        assert!(
            !contains(&clean, b"GPS 25.76"),
            "the segment between scans is gone"
        );
        assert!(!contains(&clean, b"RGB"), "the thumbnail is gone");
        assert!(
            contains(&clean, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"),
            "JFIF stays, 0×0"
        );
        assert_eq!(scan_data(&clean), scan_data(CAMERA_JPEG));
    }

    #[test]
    fn a_webp_loses_exif_and_its_flag() {
        const WEBP: &[u8] = include_bytes!("../../tests/data/photos/junk.webp");
        let original = WebP::from_bytes(Bytes::from_static(WEBP)).unwrap();
        assert!(original.has_chunk(*b"EXIF"));
        let clean = without_metadata(ImageKind::Webp, Bytes::from_static(WEBP)).unwrap();
        let clean = WebP::from_bytes(clean).unwrap();
        assert!(!clean.has_chunk(*b"EXIF") && !clean.has_chunk(*b"XMP "));
        let flags = clean
            .chunk_by_id(CHUNK_VP8X)
            .unwrap()
            .content()
            .data()
            .unwrap()[0];
        assert_eq!(flags & VP8X_EXIF_AND_XMP, 0);
        assert!(
            without_metadata(ImageKind::Webp, Bytes::from_static(b"RIFF\x04\0\0\0WEBP")).is_err()
        );
    }

    #[test]
    fn a_png_with_an_unknown_critical_chunk_or_no_pixels_is_refused() {
        use img_parts::png::PngChunk;
        let mut png = Png::from_bytes(Bytes::from_static(TINY_PNG)).unwrap();
        let at = png.chunks().len() - 1;
        png.chunks_mut().insert(
            at,
            PngChunk::new(*b"XMPL", Bytes::from_static(b"where I live")),
        );
        assert!(without_metadata(ImageKind::Png, png.encoder().bytes()).is_err());
        let mut png = Png::from_bytes(Bytes::from_static(TINY_PNG)).unwrap();
        png.chunks_mut().retain(|c| c.kind() != *b"IDAT");
        assert!(without_metadata(ImageKind::Png, png.encoder().bytes()).is_err());
    }

    #[test]
    fn a_jpeg_without_image_data_is_refused() {
        let header_only = &CAMERA_JPEG[..20];
        assert!(without_metadata(ImageKind::Jpeg, Bytes::copy_from_slice(header_only)).is_err());
        let no_end = &CAMERA_JPEG[..CAMERA_JPEG.len() - 2];
        assert!(without_metadata(ImageKind::Jpeg, Bytes::copy_from_slice(no_end)).is_err());
    }

    #[test]
    fn png_text_and_exif_chunks_go() {
        use img_parts::png::PngChunk;
        let mut png = Png::from_bytes(Bytes::from_static(TINY_PNG)).unwrap();
        let at = png.chunks().len() - 1;
        png.chunks_mut().insert(
            at,
            PngChunk::new(*b"tEXt", Bytes::from_static(b"Location\0Miami")),
        );
        png.chunks_mut()
            .insert(at, PngChunk::new(*b"eXIf", Bytes::from_static(b"MM\0*GPS")));
        let file = png.encoder().bytes();
        let clean = without_metadata(ImageKind::Png, file).unwrap();
        assert_eq!(&clean[..], TINY_PNG);
    }

    /// A 1×1 PNG.
    pub(crate) const TINY_PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8,
        0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
}
