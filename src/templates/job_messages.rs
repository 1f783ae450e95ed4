//! The words of job notifications: one push, SMS or email per event and channel, rendered from
//! the job as it is when the message goes out. Times are South Florida local time.

use chrono::{DateTime, Utc};
use chrono_tz::America::New_York;
use umuve_actors::realtime::model::{Job, LoadSize};

use super::escape_html;
use crate::notifications::{Channel, Event};

/// What a message may mention besides the job.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub job: &'a Job,
    /// The recipient's name, if known.
    pub recipient_name: Option<&'a str>,
    /// The job's driver's name, if it has a driver.
    pub driver_name: Option<&'a str>,
    /// The recipient is the job's driver (driver-app wording).
    pub to_driver: bool,
}

/// A rendered message, in the shape its channel needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Push {
        title: String,
        body: String,
        /// Offers set the app's badge.
        badge: Option<u32>,
    },
    Sms(String),
    Email {
        subject: String,
        text: String,
        html: String,
    },
}

/// `12345` -> `$123.45`.
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}${}.{:02}", cents / 100, cents % 100)
}

/// A pickup time as people in South Florida read it: `Tue, Dec 1 at 9:30 AM`.
pub fn local_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&New_York)
        .format("%a, %b %-d at %-I:%M %p")
        .to_string()
}

fn load_label(size: LoadSize) -> &'static str {
    match size {
        LoadSize::SingleItem => "Single item",
        LoadSize::Quarter => "Quarter truck",
        LoadSize::Half => "Half truck",
        LoadSize::ThreeQuarter => "Three-quarter truck",
        LoadSize::Full => "Full truck",
    }
}

/// First word of a name; "Your driver" when there is none.
fn first_name(name: Option<&str>) -> Option<&str> {
    name.and_then(|n| n.split_whitespace().next())
}

fn when(job: &Job) -> String {
    match job.scheduled_at {
        Some(at) => format!("Pickup: {}", local_time(at)),
        None => "Pickup: as soon as possible".into(),
    }
}

/// The job's details as lines of `label: value`, for emails.
fn detail_lines(job: &Job, with_amounts: bool) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("Address", job.address.clone()),
        ("Load", load_label(job.load_size).to_owned()),
        (
            "When",
            job.scheduled_at
                .map_or_else(|| "As soon as possible".to_owned(), local_time),
        ),
    ];
    if !job.description.trim().is_empty() {
        lines.push(("Items", job.description.clone()));
    }
    if with_amounts {
        lines.push(("Junk removal", dollars(job.price_cents)));
        lines.push(("Service fee", dollars(job.service_fee_cents)));
        lines.push(("Total", dollars(job.total_cents)));
    }
    lines.push(("Reference", job.id.to_string()));
    lines
}

fn email(
    subject: String,
    greeting: Option<&str>,
    intro: &str,
    lines: &[(&'static str, String)],
) -> Message {
    let hello = match first_name(greeting) {
        Some(name) => format!("Hi {name},"),
        None => "Hi,".to_owned(),
    };
    let mut text = format!("{hello}\n\n{intro}\n\n");
    for (label, value) in lines {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str("\nThank you for choosing Umuve.\n");
    let rows: String = lines
        .iter()
        .map(|(label, value)| {
            format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape_html(label),
                escape_html(value)
            )
        })
        .collect();
    let html = format!(
        "<p>{}</p><p>{}</p><table>{rows}</table><p>Thank you for choosing Umuve.</p>",
        escape_html(&hello),
        escape_html(intro)
    );
    Message::Email {
        subject,
        text,
        html,
    }
}

fn push(title: impl Into<String>, body: impl Into<String>) -> Message {
    Message::Push {
        title: title.into(),
        body: body.into(),
        badge: None,
    }
}

/// The message of `event` on `channel`; `None` when the plan has no such pair.
pub fn render(event: Event, channel: Channel, facts: &Facts<'_>) -> Option<Message> {
    let job = facts.job;
    let driver = first_name(facts.driver_name).unwrap_or("Your driver");
    let address = &job.address;
    let load = load_label(job.load_size);
    let message = match (event, channel) {
        (Event::BookingConfirmed, Channel::Sms) => Message::Sms(format!(
            "Umuve: your pickup at {address} is booked ({load}, {}). {}. We'll text you when a driver is assigned.",
            dollars(job.total_cents),
            when(job)
        )),
        (Event::BookingConfirmed, Channel::Email) => email(
            "Your Umuve pickup is booked".into(),
            facts.recipient_name,
            "Your junk removal is booked. We'll let you know as soon as a driver is assigned.",
            &detail_lines(job, true),
        ),
        (Event::PaymentReceipt, Channel::Email) => email(
            format!("Your Umuve receipt: {}", dollars(job.total_cents)),
            facts.recipient_name,
            &format!(
                "We received your payment of {} for this pickup.",
                dollars(job.total_cents)
            ),
            &detail_lines(job, true),
        ),
        (Event::Offer, Channel::Push) => Message::Push {
            title: "New pickup offer".into(),
            body: format!(
                "{load} at {address}. You earn {}. Open to accept before it expires.",
                dollars(job.driver_payout_cents)
            ),
            badge: Some(1),
        },
        (Event::JobAssigned, Channel::Push) if facts.to_driver => push(
            "Pickup assigned to you",
            format!("{load} at {address}. Open the app for the details."),
        ),
        (Event::JobAssigned, Channel::Push) => push(
            format!("{driver} is your driver"),
            format!("{driver} will pick up your junk at {address}."),
        ),
        (Event::JobAssigned, Channel::Sms) => Message::Sms(format!(
            "Umuve: {driver} is your driver for the pickup at {address}. We'll text you when {driver} is on the way."
        )),
        (Event::JobAssigned, Channel::Email) => email(
            format!("{driver} is your Umuve driver"),
            facts.recipient_name,
            &format!("{driver} will handle your pickup. You can follow them live in the app."),
            &detail_lines(job, false),
        ),
        (Event::DriverEnRoute, Channel::Push) => push(
            format!("{driver} is on the way"),
            "Follow your driver live in the app.",
        ),
        (Event::DriverEnRoute, Channel::Sms) => Message::Sms(format!(
            "Umuve: {driver} is on the way to {address}. Follow them live in the app."
        )),
        (Event::DriverArrived, Channel::Push) => push(
            format!("{driver} has arrived"),
            format!("Your driver is at {address}."),
        ),
        (Event::JobCompleted, Channel::Push) => push(
            "Pickup complete",
            format!("Your junk at {address} is gone. Thank you for choosing Umuve!"),
        ),
        (Event::JobCancelled, Channel::Push) if facts.to_driver => push(
            "Pickup cancelled",
            format!("The pickup at {address} was cancelled. You are free for the next one."),
        ),
        (Event::JobCancelled, Channel::Push) => push(
            "Pickup cancelled",
            format!("Your pickup at {address} was cancelled."),
        ),
        (Event::JobCancelled, Channel::Sms) => Message::Sms(format!(
            "Umuve: your pickup at {address} was cancelled. Any refund due goes back to your card."
        )),
        (Event::Reminder24h | Event::Reminder1h, Channel::Push) => push(
            if event == Event::Reminder24h {
                "Pickup tomorrow"
            } else {
                "Pickup in one hour"
            },
            format!("{} at {address}.", when(job)),
        ),
        (Event::Reminder24h | Event::Reminder1h, Channel::Email) => email(
            if event == Event::Reminder24h {
                "Reminder: your Umuve pickup is tomorrow".into()
            } else {
                "Reminder: your Umuve pickup is in one hour".into()
            },
            facts.recipient_name,
            "A reminder of your junk removal. Please have the items ready and reachable.",
            &detail_lines(job, false),
        ),
        _ => return None,
    };
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::Channel;
    use chrono::TimeZone;

    #[test]
    fn money_and_local_time() {
        assert_eq!(dollars(12345), "$123.45");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(-150), "-$1.50");
        // 14:30 UTC in December is 9:30 in Miami (EST); in July 10:30 (EDT).
        let winter = Utc.with_ymd_and_hms(2026, 12, 1, 14, 30, 0).unwrap();
        assert_eq!(local_time(winter), "Tue, Dec 1 at 9:30 AM");
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 14, 30, 0).unwrap();
        assert_eq!(local_time(summer), "Wed, Jul 1 at 10:30 AM");
    }

    #[test]
    fn every_planned_delivery_has_words() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let job = Job {
            id: umuve_actors::ids::JobId::new_random(),
            customer_id: umuve_actors::ids::UserId::new_random(),
            driver_id: None,
            status: umuve_actors::realtime::model::JobStatus::Assigned,
            address: "1 <Test> Way".into(),
            lat: 25.77,
            lng: -80.19,
            county: Some("Miami-Dade".into()),
            description: "sofa & chair".into(),
            load_size: LoadSize::Half,
            scheduled_at: None,
            price_cents: 20000,
            service_fee_cents: 1500,
            total_cents: 21500,
            driver_payout_cents: 16000,
            photos: Vec::new(),
            created_at: at,
            updated_at: at,
        };
        for event in Event::ALL {
            for delivery in event.deliveries() {
                let facts = Facts {
                    job: &job,
                    recipient_name: Some("Ana Lopez"),
                    driver_name: Some("Carlos Diaz"),
                    to_driver: delivery.audience == crate::notifications::Audience::Driver,
                };
                let message = render(event, delivery.channel, &facts)
                    .unwrap_or_else(|| panic!("no words for {event:?} by {:?}", delivery.channel));
                if let Message::Email { html, .. } = &message {
                    assert!(!html.contains("<Test>"), "addresses are escaped: {html}");
                }
                if delivery.channel == Channel::Sms
                    && let Message::Sms(body) = &message
                    && matches!(event, Event::JobAssigned | Event::DriverEnRoute)
                {
                    assert!(body.contains("Carlos"), "{body}");
                    assert!(!body.contains("Diaz"), "first name only: {body}");
                }
            }
        }
    }
}
