//! Job photos on disk. A request's files are streamed into `UPLOAD_DIR` with the limits checked
//! on every chunk (the body is never held in memory), typed by their first bytes (never by name
//! or header), stripped of metadata and moved into place under a random name the server made,
//! atomically (temporary file, fsync, rename). A request that fails leaves no file behind.

pub mod image;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_multipart::{Field, Multipart, MultipartError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use uuid::Uuid;

pub use image::ImageKind;

use crate::http::ApiError;

/// Files per request.
pub const MAX_FILES_PER_REQUEST: usize = 10;
/// Bytes per file.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Photos one job may hold in all.
pub const MAX_PHOTOS_PER_JOB: usize = 30;
/// A whole request: the files plus generous room for the multipart framing.
pub const MAX_REQUEST_BYTES: u64 = MAX_FILES_PER_REQUEST as u64 * MAX_FILE_BYTES + 64 * 1024;
/// The multipart field that carries photos.
pub const FIELD: &str = "photos";
/// Where a stored photo is served.
pub const URL_PREFIX: &str = "/uploads/";
/// How many files are cleaned of metadata at a time (each is read into memory for it, so this
/// bounds that memory at 4 x 10 MB however many uploads arrive at once).
const CLEANING_AT_ONCE: usize = 4;

/// The photo URLs of a job, from the JSON list of file names stored with it.
pub fn photo_urls(stored: &str) -> Result<Vec<String>, serde_json::Error> {
    let names: Vec<String> = serde_json::from_str(stored)?;
    Ok(names
        .into_iter()
        .map(|name| format!("{URL_PREFIX}{name}"))
        .collect())
}

/// A name this server could have made: 32 lower-case hex digits and an accepted extension.
/// Anything else (dots, slashes, NUL, other characters) is refused before the disk is touched.
pub fn server_made_kind(name: &str) -> Option<ImageKind> {
    let (stem, extension) = name.split_once('.')?;
    let hex = stem.len() == 32
        && stem
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return None;
    }
    ImageKind::from_extension(extension)
}

/// A photo that is in place on disk.
#[derive(Debug, Clone)]
pub struct StoredPhoto {
    pub file_name: String,
    pub kind: ImageKind,
    pub size_bytes: u64,
}

/// The upload directory.
pub struct PhotoStore {
    dir: PathBuf,
    cleaning: Arc<Semaphore>,
}

/// Removes a file when dropped, unless kept: a failed request leaves nothing behind.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %path.display(), "could not remove an upload's file");
        }
    }
}

/// Photos stored by one request; removed again unless [`Received::keep`] is called (after the
/// database has recorded them).
pub struct Received {
    photos: Vec<StoredPhoto>,
    files: Vec<RemoveOnDrop>,
}

impl Received {
    pub fn photos(&self) -> &[StoredPhoto] {
        &self.photos
    }

    pub fn keep(self) -> Vec<StoredPhoto> {
        self.files.into_iter().for_each(RemoveOnDrop::keep);
        self.photos
    }
}

impl PhotoStore {
    /// Opens (creating when absent) the upload directory; leftovers of requests cut off by a
    /// crash are removed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            cleaning: Arc::new(Semaphore::new(CLEANING_AT_ONCE)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a server-made name lives.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        server_made_kind(name).map(|_| self.dir.join(name))
    }

    /// Streams every file of the request's `photos` field to disk. Errors: 400 (malformed
    /// multipart, another field, no file), 413 (an 11th file, a file over 10 MB), 415 (not a
    /// JPEG, PNG or WebP by content, or a broken one).
    pub async fn receive(&self, mut multipart: Multipart) -> Result<Received, ApiError> {
        let mut received = Received {
            photos: Vec::new(),
            files: Vec::new(),
        };
        while let Some(field) = multipart.next().await {
            let mut field = field.map_err(multipart_error)?;
            if field.name() != Some(FIELD) {
                return Err(ApiError::BadRequest(format!(
                    "unexpected multipart field {:?}: photos go in the field `{FIELD}`",
                    field.name().unwrap_or("")
                )));
            }
            if received.photos.len() == MAX_FILES_PER_REQUEST {
                return Err(ApiError::PayloadTooLarge(format!(
                    "at most {MAX_FILES_PER_REQUEST} photos per request"
                )));
            }
            let number = received.photos.len() + 1;
            let (photo, file) = self.receive_one(&mut field, number).await?;
            received.photos.push(photo);
            received.files.push(file);
        }
        if received.photos.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "no photos: send them as files in the multipart field `{FIELD}`"
            )));
        }
        Ok(received)
    }

    async fn receive_one(
        &self,
        field: &mut Field,
        number: usize,
    ) -> Result<(StoredPhoto, RemoveOnDrop), ApiError> {
        // The first bytes decide the type, before anything is written.
        let mut head = BytesMut::new();
        let mut ended = false;
        while head.len() < image::SNIFF_LEN {
            match field.next().await {
                Some(chunk) => head.extend_from_slice(&chunk.map_err(multipart_error)?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let kind = ImageKind::sniff(&head).ok_or_else(|| {
            ApiError::UnsupportedMediaType(format!(
                "photo {number} is not a JPEG, PNG or WebP image"
            ))
        })?;
        let too_large = || {
            ApiError::PayloadTooLarge(format!(
                "photo {number} is larger than {} MB",
                MAX_FILE_BYTES / (1024 * 1024)
            ))
        };
        let mut size = head.len() as u64;
        if size > MAX_FILE_BYTES {
            return Err(too_large());
        }

        let incoming = self
            .dir
            .join(format!(".incoming-{}", Uuid::new_v4().simple()));
        let incoming_guard = RemoveOnDrop(Some(incoming.clone()));
        let mut file = tokio::fs::File::create(&incoming)
            .await
            .map_err(storage_error)?;
        file.write_all(&head).await.map_err(storage_error)?;
        if !ended {
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(multipart_error)?;
                size += chunk.len() as u64;
                if size > MAX_FILE_BYTES {
                    return Err(too_large());
                }
                file.write_all(&chunk).await.map_err(storage_error)?;
            }
        }
        file.flush().await.map_err(storage_error)?;
        drop(file);

        let name = format!("{}.{}", Uuid::new_v4().simple(), kind.extension());
        let destination = self.dir.join(&name);
        let _permit = self
            .cleaning
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the engine is stopping".into()))?;
        let cleaned = {
            let incoming = incoming.clone();
            let destination = destination.clone();
            tokio::task::spawn_blocking(move || clean_into_place(kind, &incoming, &destination))
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("photo cleaning stopped: {e}")))?
        };
        drop(incoming_guard);
        let size_bytes = match cleaned {
            Ok(size) => size,
            Err(CleanError::Invalid(why)) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "photo {number}: {why}"
                )));
            }
            Err(CleanError::Io(error)) => return Err(storage_error(error)),
        };
        Ok((
            StoredPhoto {
                file_name: name,
                kind,
                size_bytes,
            },
            RemoveOnDrop(Some(destination)),
        ))
    }
}

enum CleanError {
    Invalid(String),
    Io(std::io::Error),
}

/// Writes the image without its metadata next to `destination`, syncs it and renames it into
/// place, so a reader never sees a partial file. Returns its size.
fn clean_into_place(
    kind: ImageKind,
    incoming: &Path,
    destination: &Path,
) -> Result<u64, CleanError> {
    let original = std::fs::read(incoming).map_err(CleanError::Io)?;
    let cleaned =
        image::without_metadata(kind, Bytes::from(original)).map_err(CleanError::Invalid)?;
    let partial = destination.with_file_name(format!(
        ".part-{}",
        destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let guard = RemoveOnDrop(Some(partial.clone()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(CleanError::Io)?;
    file.write_all(&cleaned).map_err(CleanError::Io)?;
    file.sync_all().map_err(CleanError::Io)?;
    std::fs::rename(&partial, destination).map_err(CleanError::Io)?;
    guard.keep();
    Ok(cleaned.len() as u64)
}

fn multipart_error(error: MultipartError) -> ApiError {
    ApiError::BadRequest(format!("malformed multipart body: {error}"))
}

fn storage_error(error: std::io::Error) -> ApiError {
    ApiError::Unexpected(anyhow::anyhow!("cannot store a photo: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_server_makes_are_accepted() {
        let made = format!("{}.jpg", Uuid::new_v4().simple());
        assert_eq!(server_made_kind(&made), Some(ImageKind::Jpeg));
        assert_eq!(
            server_made_kind("0123456789abcdef0123456789abcdef.webp"),
            Some(ImageKind::Webp)
        );
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "0123456789abcdef0123456789abcdef.jpg\0.png",
            "0123456789ABCDEF0123456789ABCDEF.jpg",
            "0123456789abcdef0123456789abcdef.php",
            "0123456789abcdef0123456789abcdef.jpg.php",
            "..%2f..%2fetc%2fpasswd",
            ".incoming-0123456789abcdef0123456789abcdef",
            "",
        ] {
            assert_eq!(server_made_kind(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn urls_come_from_the_stored_names() {
        assert_eq!(
            photo_urls(r#"["a.jpg","b.png"]"#).unwrap(),
            ["/uploads/a.jpg", "/uploads/b.png"]
        );
        assert!(photo_urls("[]").unwrap().is_empty());
        assert!(photo_urls("nonsense").is_err());
    }
}
