//! Accounts made by admins, driver approval, listing, the caller's own profile, devices.

use serde_json::{Value, json};

use crate::on_both_databases;
use crate::support::{Backend, Env, TestApp, spawn_app_with};

fn seeding() -> Env {
    Env::default().set("ADMIN_SEED_SECRET", "seed-secret")
}

async fn admin(app: &TestApp) -> String {
    app.seed_admin("ops@goumuve.com", "correct horse battery")
        .await
}

on_both_databases!(
    admins_create_accounts_of_every_role,
    a_taken_email_or_phone_is_a_conflict,
    dispatchers_approve_drivers,
    users_are_listed_newest_first_in_pages,
    sql_metacharacters_are_stored_and_returned_verbatim,
    the_caller_edits_their_profile,
    devices_are_registered_and_removed_by_their_owner,
);

async fn admins_create_accounts_of_every_role(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    for (role, approved) in [
        ("customer", true),
        ("driver", false),
        ("operator", true),
        ("admin", true),
    ] {
        let reply = app
            .create_user(
                &admin,
                json!({ "role": role, "email": format!("{role}@example.com"), "name": "Pat" }),
            )
            .await;
        let user = reply.assert_status(201);
        assert_eq!(user["role"], role);
        assert_eq!(user["approved"], approved, "{role}");
        assert_eq!(user["name"], "Pat");
    }
    let driver = app
        .create_user(
            &admin,
            json!({ "role": "driver", "phone": "954-555-0130", "approved": true }),
        )
        .await;
    let driver = driver.assert_status(201);
    assert_eq!(driver["phone"], "+19545550130");
    assert_eq!(driver["approved"], true);

    for bad in [
        json!({ "role": "customer" }),
        json!({ "role": "customer", "phone": "not a phone" }),
        json!({ "role": "customer", "email": "not an email" }),
        json!({ "role": "customer", "phone": "954-555-0131", "password": "long enough password" }),
        json!({ "role": "customer", "email": "short@example.com", "password": "short" }),
        json!({ "role": "pilot", "email": "p@example.com" }),
        json!({ "role": "customer", "email": "n@example.com", "name": "  " }),
    ] {
        app.create_user(&admin, bad)
            .await
            .assert_error(400, "bad_request");
    }
}

async fn a_taken_email_or_phone_is_a_conflict(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    app.create_user(
        &admin,
        json!({ "role": "customer", "email": "maria@example.com", "phone": "305-555-0140" }),
    )
    .await
    .assert_status(201);
    for duplicate in [
        json!({ "role": "driver", "email": "MARIA@example.com" }),
        json!({ "role": "driver", "phone": "+1 305 555 0140" }),
        json!({ "role": "admin", "email": "ops@goumuve.com" }),
    ] {
        app.create_user(&admin, duplicate)
            .await
            .assert_error(409, "conflict");
    }
}

async fn dispatchers_approve_drivers(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    let (driver_token, driver) = app.sms_login("954-555-0150", Some("driver")).await;
    let (_, customer) = app.sms_login("954-555-0151", None).await;
    let id = driver["id"].as_str().unwrap();

    let approved = app
        .post(
            &format!("/api/admin/drivers/{id}/approve"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(approved.assert_status(200)["approved"], true);
    assert_eq!(
        app.get("/api/me", Some(&driver_token))
            .await
            .assert_status(200)["approved"],
        true
    );
    // Approving twice is harmless.
    app.post(
        &format!("/api/admin/drivers/{id}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_status(200);

    let customer_id = customer["id"].as_str().unwrap();
    app.post(
        &format!("/api/admin/drivers/{customer_id}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(409, "conflict");
    let nobody = uuid::Uuid::new_v4();
    app.post(
        &format!("/api/admin/drivers/{nobody}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
}

fn ids(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn users_are_listed_newest_first_in_pages(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    let mut created = Vec::new();
    for i in 0..5 {
        app.clock.advance(chrono::Duration::seconds(1));
        let role = if i % 2 == 0 { "driver" } else { "customer" };
        let user = app
            .create_user(
                &admin,
                json!({ "role": role, "email": format!("user{i}@example.com") }),
            )
            .await;
        created.push((
            role,
            user.assert_status(201)["id"].as_str().unwrap().to_owned(),
        ));
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/admin/users?limit=2".to_owned(),
            Some(c) => format!("/api/admin/users?limit=2&cursor={c}"),
        };
        let page = app
            .get(&path, Some(&admin))
            .await
            .assert_status(200)
            .clone();
        assert!(page["users"].as_array().unwrap().len() <= 2);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = created.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        &seen[..5],
        &expected[..],
        "newest first, no gaps, no repeats"
    );
    assert_eq!(seen.len(), 6, "the five users and the admin");

    let drivers = app
        .get("/api/admin/users?role=driver&approved=false", Some(&admin))
        .await;
    let driver_ids: Vec<String> = created
        .iter()
        .filter(|(role, _)| *role == "driver")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids(drivers.assert_status(200)), driver_ids);
    assert_eq!(drivers.body["next_cursor"], Value::Null);

    for bad in [
        "/api/admin/users?limit=0",
        "/api/admin/users?limit=101",
        "/api/admin/users?limit=ten",
        "/api/admin/users?role=pilot",
        "/api/admin/users?approved=maybe",
        "/api/admin/users?cursor=bm90LWEtY3Vyc29y",
        "/api/admin/users?cursor=%27%20OR%201%3D1",
    ] {
        app.get(bad, Some(&admin))
            .await
            .assert_error(400, "bad_request");
    }
}

async fn sql_metacharacters_are_stored_and_returned_verbatim(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    let name = "Robert'); DROP TABLE users;-- \"Bobby\" \\ % _ ` ; --";
    let email = "o'brien+test%_@example.com";
    let password = "x'; DELETE FROM users; --";
    let created = app
        .create_user(
            &admin,
            json!({ "role": "customer", "email": email, "name": name, "password": password }),
        )
        .await;
    let created = created.assert_status(201).clone();
    assert_eq!(created["name"], name);
    assert_eq!(created["email"], email);

    let session = app.login(email, password).await;
    let token = session.assert_status(200)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get("/api/me", Some(&token)).await.assert_status(200),
        &created
    );

    let renamed = app
        .request(
            reqwest::Method::PATCH,
            "/api/me",
            Some(&token),
            Some(json!({ "name": "Ann'; UPDATE users SET role='admin' WHERE '1'='1" })),
        )
        .await;
    assert_eq!(
        renamed.assert_status(200)["name"],
        "Ann'; UPDATE users SET role='admin' WHERE '1'='1"
    );
    assert_eq!(renamed.body["role"], "customer");

    let listed = app
        .get("/api/admin/users?role=customer", Some(&admin))
        .await;
    assert_eq!(
        listed.assert_status(200)["users"].as_array().unwrap().len(),
        1
    );
    let admins = app.get("/api/admin/users?role=admin", Some(&admin)).await;
    assert_eq!(
        admins.assert_status(200)["users"].as_array().unwrap().len(),
        1
    );
}

async fn the_caller_edits_their_profile(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let admin = admin(&app).await;
    let (token, user) = app.sms_login("305-555-0160", None).await;
    let patch =
        |body: Value| app.request(reqwest::Method::PATCH, "/api/me", Some(&token), Some(body));

    let updated = patch(json!({ "name": "Maria José", "email": "Maria@Example.com" })).await;
    let updated = updated.assert_status(200).clone();
    assert_eq!(updated["id"], user["id"]);
    assert_eq!(updated["name"], "Maria José");
    assert_eq!(updated["email"], "maria@example.com");
    assert_eq!(updated["phone"], "+13055550160");

    // Only what is sent changes.
    let renamed = patch(json!({ "name": "Maria" })).await;
    assert_eq!(renamed.assert_status(200)["email"], "maria@example.com");

    patch(json!({ "email": "ops@goumuve.com" }))
        .await
        .assert_error(409, "conflict");
    patch(json!({ "email": "not an email" }))
        .await
        .assert_error(400, "bad_request");
    patch(json!({ "name": "" }))
        .await
        .assert_error(400, "bad_request");
    patch(json!({ "name": 42 }))
        .await
        .assert_error(400, "bad_request");
    assert_eq!(
        app.get("/api/me", Some(&token)).await.assert_status(200)["name"],
        "Maria"
    );
    let _ = admin;
}

async fn devices_are_registered_and_removed_by_their_owner(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let (owner, _) = app.sms_login("305-555-0170", None).await;
    let (stranger, _) = app.sms_login("305-555-0171", Some("driver")).await;
    let token = "a".repeat(64);
    app.post(
        "/api/devices",
        Some(&owner),
        json!({ "token": token, "platform": "ios", "app": "customer" }),
    )
    .await
    .assert_status(204);
    // Registering again is idempotent.
    app.post(
        "/api/devices",
        Some(&owner),
        json!({ "token": token, "platform": "ios", "app": "customer" }),
    )
    .await
    .assert_status(204);

    for bad in [
        json!({ "token": "../../etc/passwd", "platform": "ios", "app": "customer" }),
        json!({ "token": "abc", "platform": "ios", "app": "customer" }),
        json!({ "token": token, "platform": "android", "app": "customer" }),
        json!({ "token": token, "platform": "ios", "app": "dispatcher" }),
    ] {
        app.post("/api/devices", Some(&owner), bad)
            .await
            .assert_error(400, "bad_request");
    }
    app.post(
        "/api/devices",
        None,
        json!({ "token": token, "platform": "ios", "app": "customer" }),
    )
    .await
    .assert_error(401, "unauthorized");

    let path = format!("/api/devices/{token}");
    app.request(reqwest::Method::DELETE, &path, Some(&stranger), None)
        .await
        .assert_error(404, "not_found");
    app.request(reqwest::Method::DELETE, &path, Some(&owner), None)
        .await
        .assert_status(204);
    app.request(reqwest::Method::DELETE, &path, Some(&owner), None)
        .await
        .assert_error(404, "not_found");
}
