//! Job photos: `POST /api/jobs/{id}/photos` and `GET /uploads/{filename}`.

use std::os::unix::fs::OpenOptionsExt;

use actix_files::NamedFile;
use actix_multipart::Multipart;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Responder, get, post, web};
use serde::Serialize;
use umuve_actors::ids::UserId;
use umuve_actors::realtime::model::JobStatus;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::caller::Caller;
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::photos::{self, Added};
use crate::uploads::{self, MAX_PHOTOS_PER_JOB, MAX_REQUEST_BYTES};

/// Photos are never changed in place (a new upload gets a new name), so clients may keep them.
const PHOTO_CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// The multipart form of an upload (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PhotoUpload {
    /// 1 to 10 JPEG, PNG or WebP files of at most 10 MB each, in the field `photos`.
    #[schema(value_type = Vec<String>, format = Binary)]
    photos: Vec<Vec<u8>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhotoList {
    /// Every photo of the job after this upload, oldest first (`/uploads/<name>`).
    pub photos: Vec<String>,
    /// The photos this request added, in the order sent.
    pub added: Vec<String>,
}

/// Adds photos to a job (its customer, its driver, dispatchers). Files are typed by content;
/// GPS and other metadata are removed before they are stored.
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    request_body(content = PhotoUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = PhotoList),
        (status = 400, description = "Malformed multipart body, another field, or no file", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such job, or not the caller's", body = ErrorBody),
        (status = 409, description = "The job is cancelled, or would hold more than 30 photos", body = ErrorBody),
        (status = 413, description = "More than 10 files, or a file over 10 MB", body = ErrorBody),
        (status = 415, description = "A file that is not a JPEG, PNG or WebP image", body = ErrorBody),
        (status = 429, description = "Too many uploads, or another of the caller's is running; see Retry-After", body = ErrorBody),
    )
)]
#[post("/api/jobs/{id}/photos")]
pub async fn upload_photos(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Refusals that need no body come first: the upload is never read for them.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|bytes| bytes > MAX_REQUEST_BYTES) {
        return Err(uploads::upload_too_large());
    }
    let job = super::jobs::visible_job(&state, &caller, id.into_inner()).await?;
    let job_id = job.id;
    if !photos::takes_photos(job.status) {
        return Err(closed(job.status));
    }
    if job.photos.len() >= MAX_PHOTOS_PER_JOB {
        return Err(too_many(job.photos.len()));
    }
    state.limits.check_upload(caller.user_id).await?;
    let _slot = state.photos.slot_for(caller.user_id)?;

    let multipart = Multipart::new(req.headers(), uploads::limited_body(body));
    let room = (MAX_PHOTOS_PER_JOB - job.photos.len()).min(uploads::MAX_FILES_PER_REQUEST);
    let received = state.photos.receive(multipart, room).await?;
    let added = match photos::add(
        &state.db,
        job_id,
        UserId::from_uuid(caller.user_id),
        received.photos(),
        state.clock.now(),
    )
    .await?
    {
        Added::Job(job) => job,
        Added::NoSuchJob => return Err(ApiError::NotFound("no such job".into())),
        Added::TooMany(has) => return Err(too_many(has)),
        Added::Closed(status) => return Err(closed(status)),
    };
    let stored = received.keep();
    tracing::info!(job_id = %job_id, files = stored.len(), "photos added");
    Ok(HttpResponse::Created().json(PhotoList {
        photos: added.photos,
        added: stored
            .iter()
            .map(|p| uploads::url_of(&p.file_name))
            .collect(),
    }))
}

fn closed(status: JobStatus) -> ApiError {
    ApiError::Conflict(format!(
        "the job is {}: it takes no more photos",
        status.as_str()
    ))
}

fn too_many(has: usize) -> ApiError {
    ApiError::Conflict(format!(
        "a job holds at most {MAX_PHOTOS_PER_JOB} photos; this one has {has}"
    ))
}

/// A job photo. Only names the server made and recorded are served; the URL itself is the
/// access key (122 random bits), so apps and portals can show it without a token.
#[utoipa::path(
    tag = "jobs",
    params(("filename" = String, Path, description = "A name from a job's `photos`")),
    responses(
        (status = 200, description = "The image, as stored: JPEG, PNG or WebP", content(
            ("image/jpeg"), ("image/png"), ("image/webp")
        )),
        (status = 404, description = "No such photo", body = ErrorBody),
    )
)]
#[get("/uploads/{filename}")]
pub async fn serve_photo(
    state: web::Data<AppState>,
    filename: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound("no such photo".into());
    let name = filename.into_inner();
    let path = state.photos.path_of(&name).ok_or_else(not_found)?;
    let content_type = photos::content_type(&state.db, &name)
        .await?
        .ok_or_else(not_found)?;
    let file = tokio::task::spawn_blocking(move || {
        // O_NOFOLLOW: a symbolic link planted under a valid name is refused, never followed.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|file| {
                let regular = file.metadata()?.is_file();
                Ok((file, path, regular))
            })
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("photo open stopped: {e}")))?;
    let (file, path, regular) = match file {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(%error, file = %name, "a recorded photo cannot be opened");
            return Err(not_found());
        }
    };
    if !regular {
        return Err(not_found());
    }
    let mime: mime::Mime = content_type.parse().map_err(|_| not_found())?;
    let named = NamedFile::from_file(file, path)
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot serve a photo: {e}")))?
        .set_content_type(mime)
        .disable_content_disposition();
    let mut response = named.respond_to(&req).map_into_boxed_body();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(PHOTO_CACHE_CONTROL),
    );
    // Shown by apps and portals on other origins.
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    Ok(response)
}
