//! The per-request cost of authentication: verifying an access token (every authenticated
//! request and WebSocket upgrade pays it), hashing a one-time code, parsing a phone number.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use umuve_dispatch::auth::one_time::OneTimeHasher;
use umuve_dispatch::auth::tokens::TokenKeys;
use umuve_dispatch::domain::{Phone, Role};
use uuid::Uuid;

fn tokens(c: &mut Criterion) {
    let keys = TokenKeys::new(b"bench-secret-0123456789abcdef");
    let now = Utc::now();
    let token = keys.issue(Uuid::new_v4(), Role::Driver, now);
    c.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| keys.verify(black_box(&token), now).unwrap())
    });
    c.bench_function("jwt_issue_hs256", |b| {
        b.iter(|| keys.issue(black_box(Uuid::nil()), Role::Customer, now))
    });
}

fn one_time_codes(c: &mut Criterion) {
    let hasher = OneTimeHasher::new(b"bench-secret-key");
    c.bench_function("sms_code_hmac", |b| {
        b.iter(|| hasher.sms_code(black_box("+13055550100"), black_box("123456")))
    });
    c.bench_function("phone_parse", |b| {
        b.iter(|| Phone::parse(black_box("(305) 555-0100")).unwrap())
    });
}

criterion_group!(benches, tokens, one_time_codes);
criterion_main!(benches);
