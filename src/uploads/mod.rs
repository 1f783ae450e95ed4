//! Job photos on disk. A request's files are streamed into `UPLOAD_DIR` with the limits checked
//! on every chunk (the body is never held in memory), typed by their first bytes (never by name
//! or header), stripped of metadata and moved into place under a random name the server made,
//! atomically (temporary file, fsync, rename). A request that fails, or whose client goes
//! away, leaves no file behind.

pub mod image;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
const URL_PREFIX: &str = "/uploads/";
/// How many files are cleaned of metadata at a time. Cleaning reads a file (at most 10 MB)
/// into memory and holds about two copies of it, so this bounds that memory at about 80 MB
/// however many uploads arrive at once.
const CLEANING_AT_ONCE: usize = 4;
/// Uploads being received at once, engine-wide: each holds a file descriptor and disk space.
const UPLOADS_AT_ONCE: usize = 32;
/// How long one upload may take from its first byte to its last (100 MB at 350 KB/s). A slower
/// client is cut off and its files removed, so it cannot hold a slot indefinitely.
pub const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);
/// Leftover files older than this are removed at start-up (younger ones may belong to an
/// upload still running in another engine sharing the directory).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

fn older_than_leftover_age(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > LEFTOVER_AGE)
}

/// The photo URLs of a job, from the JSON list of file names stored with it.
pub fn photo_urls(stored: &str) -> Result<Vec<String>, serde_json::Error> {
    let names: Vec<String> = serde_json::from_str(stored)?;
    Ok(names.into_iter().map(|name| url_of(&name)).collect())
}

/// Where the photo stored under `name` is served.
pub fn url_of(name: &str) -> String {
    format!("{URL_PREFIX}{name}")
}

/// The refusal of a body larger than one upload may be.
pub fn upload_too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "an upload holds at most {MAX_FILES_PER_REQUEST} photos of {} MB",
        MAX_FILE_BYTES / (1024 * 1024)
    ))
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
    receiving: Arc<Semaphore>,
    /// Users with an upload in progress: one at a time each.
    uploading: Arc<Mutex<HashSet<Uuid>>>,
}

/// Removes a file when dropped, unless kept: a failed request leaves nothing behind.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn keep(mut self) {
        self.0 = None;
    }
}

fn remove_now(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, path = %path.display(), "could not remove an upload's file");
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // At once, so a refused request's files are gone when it is answered. An unlink is a
        // short metadata write, and only failed uploads do it on an async worker.
        if let Some(path) = self.0.take() {
            remove_now(&path);
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

/// A user's place in the upload queue: one upload at a time per user, [`UPLOADS_AT_ONCE`] in
/// all. Released when dropped.
pub struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    user: Uuid,
    uploading: Arc<Mutex<HashSet<Uuid>>>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.uploading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.user);
    }
}

/// The request body, cut off with an error past [`MAX_REQUEST_BYTES`] (a body without a
/// `Content-Length`, chunked, is counted as it arrives).
pub fn limited_body<S>(body: S) -> impl Stream<Item = Result<Bytes, PayloadError>>
where
    S: Stream<Item = Result<Bytes, PayloadError>>,
{
    body.scan(0u64, |received, chunk| {
        let chunk = chunk.and_then(|bytes| {
            *received += bytes.len() as u64;
            if *received > MAX_REQUEST_BYTES {
                Err(PayloadError::Overflow)
            } else {
                Ok(bytes)
            }
        });
        futures_util::future::ready(Some(chunk))
    })
}

impl PhotoStore {
    /// Opens (creating when absent) the upload directory; temporary files left by requests
    /// cut off by a crash over an hour ago are removed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let temporary = name.starts_with(".incoming-") || name.starts_with(".part-");
            if temporary && older_than_leftover_age(&entry) {
                remove_now(&entry.path());
            }
        }
        Ok(Self {
            dir,
            cleaning: Arc::new(Semaphore::new(CLEANING_AT_ONCE)),
            receiving: Arc::new(Semaphore::new(UPLOADS_AT_ONCE)),
            uploading: Arc::default(),
        })
    }

    /// Removes photo files (server-made names) over an hour old that `is_recorded` does not
    /// know: a crash between storing a file and recording it leaves one. Blocking; returns how
    /// many went.
    pub fn remove_unrecorded(&self, is_recorded: impl Fn(&str) -> bool) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if server_made_kind(&name).is_some()
                && !is_recorded(&name)
                && older_than_leftover_age(&entry)
            {
                remove_now(&entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Where a server-made name lives.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        server_made_kind(name).map(|_| self.dir.join(name))
    }

    /// A slot for `user`'s upload: refused (429) while another upload of theirs is running, or
    /// when the engine receives [`UPLOADS_AT_ONCE`] already.
    pub fn slot_for(&self, user: Uuid) -> Result<UploadSlot, ApiError> {
        let busy = || ApiError::rate_limited(Duration::from_secs(5));
        let permit = self
            .receiving
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let mut uploading = self
            .uploading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !uploading.insert(user) {
            return Err(busy());
        }
        Ok(UploadSlot {
            _permit: permit,
            user,
            uploading: self.uploading.clone(),
        })
    }

    /// Streams every file of the request's `photos` field to disk, at most `room` files (what
    /// the job can still take, at most [`MAX_FILES_PER_REQUEST`]). Errors: 400 (malformed
    /// multipart, another field, no file, slower than [`UPLOAD_DEADLINE`]), 409 (more files
    /// than the job has room for), 413 (an 11th file, a file over 10 MB, a body over
    /// [`MAX_REQUEST_BYTES`]), 415 (not a JPEG, PNG or WebP by content, or a broken one).
    pub async fn receive(&self, multipart: Multipart, room: usize) -> Result<Received, ApiError> {
        tokio::time::timeout(UPLOAD_DEADLINE, self.receive_all(multipart, room))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::BadRequest(format!(
                    "the upload did not finish within {} s",
                    UPLOAD_DEADLINE.as_secs()
                )))
            })
    }

    async fn receive_all(
        &self,
        mut multipart: Multipart,
        room: usize,
    ) -> Result<Received, ApiError> {
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
            if received.photos.len() >= room {
                return Err(ApiError::Conflict(format!(
                    "a job holds at most {MAX_PHOTOS_PER_JOB} photos; this one has room for {room}"
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
        let permit = self
            .cleaning
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("the engine is stopping".into()))?;
        // Cleaning, syncing and renaming run as one blocking task holding the permit, and hand
        // back the final file guarded: if this request is dropped meanwhile (its client went
        // away), the task still finishes, its result is dropped, and the file goes with it.
        let dir = self.dir.clone();
        let cleaned = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _incoming = incoming_guard;
            clean_into_place(kind, &incoming, &dir, &name).map(|(file, size)| (file, size, name))
        })
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("photo cleaning stopped: {e}")))?;
        match cleaned {
            Ok((file, size_bytes, file_name)) => Ok((
                StoredPhoto {
                    file_name,
                    kind,
                    size_bytes,
                },
                file,
            )),
            Err(CleanError::Invalid(why)) => Err(ApiError::UnsupportedMediaType(format!(
                "photo {number}: {why}"
            ))),
            Err(CleanError::Io(error)) => Err(storage_error(error)),
        }
    }
}

enum CleanError {
    Invalid(String),
    Io(std::io::Error),
}

/// Writes the image without its metadata to a temporary file, syncs it, renames it to `name`
/// (a reader never sees a partial file) and syncs the directory. Returns the file, removed
/// unless kept, and its size.
fn clean_into_place(
    kind: ImageKind,
    incoming: &Path,
    dir: &Path,
    name: &str,
) -> Result<(RemoveOnDrop, u64), CleanError> {
    let original = std::fs::read(incoming).map_err(CleanError::Io)?;
    let cleaned =
        image::without_metadata(kind, Bytes::from(original)).map_err(CleanError::Invalid)?;
    let partial = dir.join(format!(".part-{name}"));
    let partial_guard = RemoveOnDrop(Some(partial.clone()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(CleanError::Io)?;
    file.write_all(&cleaned).map_err(CleanError::Io)?;
    file.sync_all().map_err(CleanError::Io)?;
    let destination = dir.join(name);
    let destination_guard = RemoveOnDrop(Some(destination.clone()));
    std::fs::rename(&partial, &destination).map_err(CleanError::Io)?;
    partial_guard.keep();
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(CleanError::Io)?;
    Ok((destination_guard, cleaned.len() as u64))
}

fn multipart_error(error: MultipartError) -> ApiError {
    match error {
        MultipartError::Payload(PayloadError::Overflow) => upload_too_large(),
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
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

    fn file_aged(dir: &Path, name: &str, age: Duration) {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn old_unrecorded_photos_and_temporary_files_go_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let hours = |n: u64| Duration::from_secs(n * 3600);
        let recorded = "0123456789abcdef0123456789abcdef.jpg";
        let orphan = "fedcba9876543210fedcba9876543210.png";
        let young_orphan = "00000000000000000000000000000000.webp";
        file_aged(dir.path(), recorded, hours(2));
        file_aged(dir.path(), orphan, hours(2));
        file_aged(dir.path(), young_orphan, Duration::ZERO);
        file_aged(dir.path(), ".incoming-old", hours(2));
        file_aged(dir.path(), ".part-young.png", Duration::ZERO);
        file_aged(dir.path(), ".bashrc", hours(2));
        file_aged(dir.path(), "notes.txt", hours(2));

        // Opening removes old temporary files only.
        let store = PhotoStore::open(dir.path()).unwrap();
        assert_eq!(store.remove_unrecorded(|name| name == recorded).unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".bashrc",
                ".part-young.png",
                young_orphan,
                recorded,
                "notes.txt"
            ]
        );
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
