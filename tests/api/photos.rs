//! Job photos through the real interfaces: multipart uploads over HTTP (and raw TCP where a
//! client library would tidy the request up), files on disk, served back.

use std::path::Path;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dispatch::{DOWNTOWN_MIAMI, env, office};
use crate::on_both_databases;
use crate::support::{Backend, Reply, TestApp, multipart, spawn_app_on, spawn_app_with};

const JPEG_WITH_GPS: &[u8] = include_bytes!("../data/photos/junk-with-gps.jpg");
const PNG: &[u8] = include_bytes!("../data/photos/junk.png");
const WEBP: &[u8] = include_bytes!("../data/photos/junk.webp");
const PHP: &[u8] = b"<?php system($_GET['cmd']); ?>\n";

/// A multipart body of these (field, file name, declared type, bytes) parts.
fn multipart(parts: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    multipart::body(parts)
}

/// The request line and headers of an upload sent by hand, announcing `content_length` bytes.
fn raw_upload_head(job_id: &str, token: &str, content_length: usize) -> String {
    format!(
        "POST /api/jobs/{job_id}/photos HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {}\r\nContent-Length: {content_length}\r\n\r\n",
        multipart::content_type()
    )
}

/// Uploads one PNG to the job and returns its URL.
async fn upload_one_png(app: &TestApp, job_id: &str, token: &str) -> String {
    let reply = upload(
        app,
        job_id,
        token,
        multipart(&[("photos", "a.png", "image/png", PNG)]),
    )
    .await;
    reply.assert_status(201)["added"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn upload(app: &TestApp, job_id: &str, token: &str, body: Vec<u8>) -> Reply {
    app.send(
        app.client
            .post(app.url(&format!("/api/jobs/{job_id}/photos")))
            .bearer_auth(token)
            .header("content-type", multipart::content_type())
            .body(body),
    )
    .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The files in the upload directory (temporary ones included).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The bytes of a JPEG from its first scan to its end: the image itself.
fn image_data(jpeg: &[u8]) -> &[u8] {
    let start = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("a scan");
    let end = jpeg
        .windows(2)
        .rposition(|w| w == [0xFF, 0xD9])
        .expect("an end");
    &jpeg[start..end + 2]
}

async fn photos_are_typed_by_content_and_served_without_metadata(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    assert!(contains(JPEG_WITH_GPS, b"Exif\0\0"));
    assert!(contains(JPEG_WITH_GPS, b"iPhone 15 Pro"));

    // A PNG named .gif and declared as GIF is stored as the PNG it is.
    let reply = upload(
        &app,
        job_id,
        &office.customer,
        multipart(&[
            ("photos", "x.gif", "image/gif", PNG),
            ("photos", "IMG_0042.jpg", "image/jpeg", JPEG_WITH_GPS),
            ("photos", "junk.webp", "application/octet-stream", WEBP),
        ]),
    )
    .await;
    let body = reply.assert_status(201).clone();
    let urls: Vec<String> = serde_json::from_value(body["photos"].clone()).unwrap();
    assert_eq!(body["added"], body["photos"]);
    assert_eq!(urls.len(), 3);
    let extensions: Vec<&str> = urls.iter().map(|u| u.rsplit('.').next().unwrap()).collect();
    assert_eq!(extensions, ["png", "jpg", "webp"]);
    for url in &urls {
        let name = url
            .strip_prefix("/uploads/")
            .expect("served under /uploads/");
        let stem = name.split('.').next().unwrap();
        assert_eq!(stem.len(), 32, "a random server-made name: {name}");
        assert!(!name.contains("x.gif") && !name.contains("IMG_0042"));
    }

    // The job lists them.
    let read = app
        .get(&format!("/api/jobs/{job_id}"), Some(&office.customer))
        .await;
    assert_eq!(read.assert_status(200)["photos"], json!(urls));

    // Served with the type their content has, and the JPEG without its EXIF (GPS, camera).
    let expected = [
        ("image/png", PNG),
        ("image/jpeg", JPEG_WITH_GPS),
        ("image/webp", WEBP),
    ];
    for (url, (content_type, original)) in urls.iter().zip(expected) {
        let response = app.client.get(app.url(url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type);
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let served = response.bytes().await.unwrap();
        assert!(!contains(&served, b"Exif"), "{url} still has EXIF");
        assert!(
            !contains(&served, b"iPhone"),
            "{url} still names the camera"
        );
        if content_type == "image/jpeg" {
            assert!(served.len() < original.len());
            assert_eq!(&served[..2], [0xFF, 0xD8]);
            assert_eq!(
                image_data(&served),
                image_data(original),
                "the picture itself is untouched"
            );
        }
        if content_type == "image/png" {
            assert_eq!(
                &served[..],
                original,
                "a PNG without metadata is kept as it is"
            );
        }
    }

    // Its driver and dispatchers may add photos too; nobody else may see the job.
    let mut office = office;
    let driver = office.free_driver(&app, DOWNTOWN_MIAMI).await;
    app.post(
        &format!("/api/jobs/{job_id}/assign"),
        Some(&office.admin),
        json!({ "driver_id": driver.id }),
    )
    .await
    .assert_status(200);
    let one_png = || multipart(&[("photos", "after.png", "image/png", PNG)]);
    upload(&app, job_id, &driver.token, one_png())
        .await
        .assert_status(201);
    upload(&app, job_id, &office.admin, one_png())
        .await
        .assert_status(201);
    let stranger = office.driver(&app, true).await;
    upload(&app, job_id, &stranger.token, one_png())
        .await
        .assert_error(404, "not_found");
    let other_customer = app.token_for(&uuid::Uuid::new_v4().to_string(), "customer");
    upload(&app, job_id, &other_customer, one_png())
        .await
        .assert_error(404, "not_found");
    app.send(
        app.client
            .post(app.url(&format!("/api/jobs/{job_id}/photos")))
            .header("content-type", multipart::content_type())
            .body(one_png()),
    )
    .await
    .assert_error(401, "unauthorized");

    let read = app
        .get(&format!("/api/jobs/{job_id}"), Some(&office.customer))
        .await;
    assert_eq!(
        read.assert_status(200)["photos"].as_array().unwrap().len(),
        5
    );
    assert_eq!(
        files_in(app.uploads.path()).len(),
        5,
        "no temporary file is left"
    );
}

async fn bad_uploads_are_refused_and_leave_nothing_behind(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    let customer = &office.customer;

    let eleven: Vec<(&str, &str, &str, &[u8])> = (0..11)
        .map(|_| ("photos", "a.png", "image/png", PNG))
        .collect();
    upload(&app, job_id, customer, multipart(&eleven))
        .await
        .assert_error(413, "payload_too_large");

    // A script named like a photo and declared as one is not a photo.
    let message = upload(
        &app,
        job_id,
        customer,
        multipart(&[
            ("photos", "ok.png", "image/png", PNG),
            ("photos", "x.jpg", "image/jpeg", PHP),
        ]),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    assert!(message.contains("photo 2"), "{message}");

    // An empty file, and one too short to tell.
    for bytes in [&b""[..], &PNG[..4]] {
        upload(
            &app,
            job_id,
            customer,
            multipart(&[("photos", "x.png", "image/png", bytes)]),
        )
        .await
        .assert_error(415, "unsupported_media_type");
    }

    // JPEG magic bytes in front of something that is not a JPEG.
    let mut fake_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    fake_jpeg.extend_from_slice(PHP);
    upload(
        &app,
        job_id,
        customer,
        multipart(&[("photos", "x.jpg", "image/jpeg", &fake_jpeg)]),
    )
    .await
    .assert_error(415, "unsupported_media_type");

    upload(
        &app,
        job_id,
        customer,
        multipart(&[("avatar", "a.png", "image/png", PNG)]),
    )
    .await
    .assert_error(400, "bad_request");
    upload(&app, job_id, customer, multipart(&[]))
        .await
        .assert_error(400, "bad_request");
    upload(&app, job_id, customer, b"not multipart at all".to_vec())
        .await
        .assert_error(400, "bad_request");
    let json_body = app
        .post(
            &format!("/api/jobs/{job_id}/photos"),
            Some(customer),
            json!({ "photos": ["a.png"] }),
        )
        .await;
    json_body.assert_error(400, "bad_request");
    // A path in the file name changes nothing: the server names the file.
    let reply = upload(
        &app,
        job_id,
        customer,
        multipart(&[("photos", "../../../../tmp/evil.png", "image/png", PNG)]),
    )
    .await;
    let url = reply.assert_status(201)["added"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!url.contains("evil") && !url.contains(".."), "{url}");
    assert!(!Path::new("/tmp/evil.png").exists());
    app.get(
        &format!("/api/jobs/{}/photos", uuid::Uuid::new_v4()),
        Some(customer),
    )
    .await
    .assert_error(405, "method_not_allowed");
    upload(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        customer,
        multipart(&[("photos", "a.png", "image/png", PNG)]),
    )
    .await
    .assert_error(404, "not_found");
    upload(
        &app,
        "not-a-uuid",
        customer,
        multipart(&[("photos", "a.png", "image/png", PNG)]),
    )
    .await
    .assert_error(400, "bad_request");

    let job = app
        .get(&format!("/api/jobs/{job_id}"), Some(customer))
        .await;
    assert_eq!(
        job.assert_status(200)["photos"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        files_in(app.uploads.path()),
        [url.strip_prefix("/uploads/").unwrap().to_owned()],
        "refused uploads leave no file"
    );
}

async fn a_job_holds_at_most_thirty_photos_and_none_once_cancelled(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    let ten: Vec<(&str, &str, &str, &[u8])> = (0..10)
        .map(|_| ("photos", "a.png", "image/png", PNG))
        .collect();
    for files in [&ten[..], &ten[..], &ten[..5]] {
        upload(&app, job_id, &office.customer, multipart(files))
            .await
            .assert_status(201);
    }
    // Room for 5 more: the 6th file of this request is refused as it arrives, and the request's
    // first five go too (nothing is kept from a refused request).
    let message = upload(&app, job_id, &office.customer, multipart(&ten))
        .await
        .assert_error(409, "conflict");
    assert!(message.contains("room for 5"), "{message}");
    assert_eq!(files_in(app.uploads.path()).len(), 25);
    upload(&app, job_id, &office.customer, multipart(&ten[..5]))
        .await
        .assert_status(201);
    upload(&app, job_id, &office.customer, multipart(&ten[..1]))
        .await
        .assert_error(409, "conflict");
    let other = office.book(&app, DOWNTOWN_MIAMI).await;
    let other_id = other["id"].as_str().unwrap();
    app.post(
        &format!("/api/jobs/{other_id}/cancel"),
        Some(&office.customer),
        json!({}),
    )
    .await
    .assert_status(200);
    upload(&app, other_id, &office.customer, multipart(&ten[..1]))
        .await
        .assert_error(409, "conflict");
    assert_eq!(files_in(app.uploads.path()).len(), 30);
}

on_both_databases!(
    photos_are_typed_by_content_and_served_without_metadata,
    bad_uploads_are_refused_and_leave_nothing_behind,
    a_job_holds_at_most_thirty_photos_and_none_once_cancelled,
);

/// Writes `head` and then `body_bytes` of the body to a raw connection and returns the
/// response's status line and headers, read while the rest of the body is still unsent.
async fn raw_request(app: &TestApp, head: String, body: Vec<u8>) -> String {
    let address = app.address.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        // Holds the connection open without sending what the headers promised.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(writer)
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    while !contains(&response, b"\r\n\r\n") {
        let read = reader.read(&mut buffer).await.unwrap();
        assert!(
            read > 0,
            "the engine closed the connection without answering"
        );
        response.extend_from_slice(&buffer[..read]);
    }
    writing.abort();
    String::from_utf8_lossy(&response).into_owned()
}

#[actix_web::test]
async fn an_oversized_photo_is_refused_without_reading_all_of_it() {
    let app = spawn_app_with(Backend::Sqlite, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();

    // The headers announce an 11 MB file; only 10.5 MB of it is ever sent.
    let file_size = 11 * 1024 * 1024;
    let preamble = multipart::part_head("photos", "big.png", "image/png");
    let content_length = preamble.len() + file_size + multipart::end().len();
    let mut sent = preamble.into_bytes();
    sent.extend_from_slice(&PNG[..16]);
    sent.resize(sent.len() + 10 * 1024 * 1024 + 512 * 1024, b'x');
    let head = raw_upload_head(job_id, &office.customer, content_length);
    let response = raw_request(&app, head, sent).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    // More than a whole upload may hold, announced up front: refused before any of it is read.
    let head = raw_upload_head(job_id, &office.customer, 200 * 1024 * 1024);
    let response = raw_request(&app, head, Vec::new()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(files_in(app.uploads.path()).is_empty(), "nothing is kept");
}

/// Status and body of a raw GET, with the path exactly as given (no client normalisation).
async fn raw_get(app: &TestApp, path: &str) -> (u16, String) {
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {path:?}: {text}"));
    (status, text)
}

#[actix_web::test]
async fn only_photos_the_server_stored_are_served() {
    let app = spawn_app_with(Backend::Sqlite, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    let url = upload_one_png(&app, job_id, &office.customer).await;
    let (status, _) = raw_get(&app, &url).await;
    assert_eq!(status, 200);

    // A file next to the photos, and a link out of the directory, under server-style names.
    let dir = app.uploads.path();
    let planted = "0123456789abcdef0123456789abcdef.png";
    std::fs::write(dir.join(planted), PNG).unwrap();
    std::fs::write(dir.join("notes.txt"), "secret notes").unwrap();

    for path in [
        "/uploads/../../etc/passwd",
        "/uploads/..%2f..%2fetc%2fpasswd",
        "/uploads/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/uploads/%2e%2e/%2e%2e/etc/passwd",
        "/uploads/%2Fetc%2Fpasswd",
        "/uploads//etc/passwd",
        "/uploads/notes.txt",
        "/uploads/.",
        "/uploads/%00",
        "/uploads/x.png%00.jpg",
        "/uploads/..%5c..%5cetc%5cpasswd",
        &format!("/uploads/{planted}"),
        &format!("{url}%00"),
        &format!("{url}/.."),
    ] {
        let (status, text) = raw_get(&app, path).await;
        assert!(
            status == 400 || status == 404,
            "{path:?} answered {status}: {text}"
        );
        assert!(!text.contains("root:"), "{path:?} leaked a system file");
        assert!(!text.contains("secret notes"), "{path:?} leaked a file");
    }

    // A recorded photo replaced by a symbolic link is not followed.
    let name = url.strip_prefix("/uploads/").unwrap();
    std::fs::remove_file(dir.join(name)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join(name)).unwrap();
    let (status, text) = raw_get(&app, &url).await;
    assert_eq!(status, 404, "{text}");
    assert!(!text.contains("root:"));
}

#[actix_web::test]
async fn uploads_are_rate_limited_per_user() {
    let app = spawn_app_with(Backend::Sqlite, env().set("UPLOADS_PER_USER_PER_HOUR", "2")).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    let one = || multipart(&[("photos", "a.png", "image/png", PNG)]);
    for _ in 0..2 {
        upload(&app, job_id, &office.customer, one())
            .await
            .assert_status(201);
    }
    let refused = upload(&app, job_id, &office.customer, one()).await;
    refused.assert_error(429, "rate_limited");
    let retry_after = refused.retry_after();
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    // Another user's budget is their own.
    upload(&app, job_id, &office.admin, one())
        .await
        .assert_status(201);
}

/// Polls the upload directory until `holds` (the engine's progress is only visible on disk).
async fn until_files(dir: &Path, what: &str, holds: impl Fn(&[String]) -> bool) {
    for _ in 0..500 {
        if holds(&files_in(dir)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: the upload directory holds {:?}", files_in(dir));
}

#[actix_web::test]
async fn a_client_that_goes_away_mid_upload_leaves_no_file() {
    let app = spawn_app_with(Backend::Sqlite, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();

    let mut sent = multipart::part_head("photos", "a.png", "image/png").into_bytes();
    sent.extend_from_slice(PNG);
    sent.resize(sent.len() + 1024 * 1024, 0);
    let head = raw_upload_head(job_id, &office.customer, sent.len() + 4 * 1024 * 1024);
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&sent).await.unwrap();
    until_files(app.uploads.path(), "the upload is being written", |files| {
        files.iter().any(|f| f.starts_with(".incoming-"))
    })
    .await;
    drop(stream);
    until_files(
        app.uploads.path(),
        "the abandoned upload is removed",
        <[String]>::is_empty,
    )
    .await;
    let job = app
        .get(&format!("/api/jobs/{job_id}"), Some(&office.customer))
        .await;
    assert_eq!(job.assert_status(200)["photos"], json!([]));
}

#[actix_web::test]
async fn one_upload_at_a_time_per_user() {
    let app = spawn_app_with(Backend::Sqlite, env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();

    // An upload that stalls half-way.
    let mut sent = multipart::part_head("photos", "a.png", "image/png").into_bytes();
    sent.extend_from_slice(PNG);
    let head = raw_upload_head(job_id, &office.customer, sent.len() + 1024);
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&sent).await.unwrap();
    until_files(
        app.uploads.path(),
        "the stalled upload is being written",
        |files| files.iter().any(|f| f.starts_with(".incoming-")),
    )
    .await;

    let one = || multipart(&[("photos", "b.png", "image/png", PNG)]);
    let refused = upload(&app, job_id, &office.customer, one()).await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    // Others are not held up.
    upload(&app, job_id, &office.admin, one())
        .await
        .assert_status(201);

    // The client gives up sending: its upload is refused, its file removed, its slot freed.
    stalled.shutdown().await.unwrap();
    let mut response = Vec::new();
    stalled.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        !files_in(app.uploads.path())
            .iter()
            .any(|f| f.starts_with('.')),
        "no temporary file is left"
    );
    upload(&app, job_id, &office.customer, one())
        .await
        .assert_status(201);
}

#[actix_web::test]
async fn a_restart_removes_photo_files_a_crash_left_unrecorded() {
    let uploads = tempfile::tempdir().unwrap();
    let dir = uploads.path().to_string_lossy().into_owned();
    let app = spawn_app_with(Backend::Sqlite, env().set("UPLOAD_DIR", &dir)).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job["id"].as_str().unwrap();
    let url = upload_one_png(&app, job_id, &office.customer).await;
    let recorded = url.strip_prefix("/uploads/").unwrap().to_owned();

    // Two hours later: the recorded photo, and one a crash stored but never recorded.
    let orphan = "fedcba9876543210fedcba9876543210.jpg";
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::write(uploads.path().join(orphan), JPEG_WITH_GPS).unwrap();
    for name in [orphan, recorded.as_str()] {
        std::fs::File::options()
            .write(true)
            .open(uploads.path().join(name))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let database = app.shut_down().await;

    let app = spawn_app_on(database, env().set("UPLOAD_DIR", &dir)).await;
    until_files(uploads.path(), "the unrecorded file is removed", |files| {
        !files.iter().any(|f| f == orphan)
    })
    .await;
    assert_eq!(files_in(uploads.path()), [recorded]);
    let (status, _) = raw_get(&app, &url).await;
    assert_eq!(status, 200);
}
