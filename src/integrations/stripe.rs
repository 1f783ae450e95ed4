//! Stripe through async-stripe, pointed at `STRIPE_API_BASE`. Every call that makes something
//! carries an idempotency key derived from the job (or driver) and the purpose, so a retry, by
//! us or by a second engine process, returns the object made the first time instead of making
//! another.

use std::collections::HashMap;
use std::time::Duration;

use ::stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use secrecy::ExposeSecret;
use stripe_connect::account::{
    CreateAccount, CreateAccountCapabilities, CreateAccountCapabilitiesTransfers, CreateAccountType,
};
use stripe_connect::account_link::{CreateAccountLink, CreateAccountLinkType};
use stripe_connect::transfer::{CreateTransfer, ListTransfer};
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
};
use stripe_core::refund::{CreateRefund, ListRefund};
use stripe_types::Currency;

use crate::config::StripeSettings;

/// How long one Stripe call may take before it counts as failed (and is retried, with the same
/// key, when it made something).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a Stripe call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StripeFailure {
    /// Worth trying again with the same key: network trouble, a timeout, 409 (the same key in
    /// flight), 429, 5xx, or an answer we could not read.
    #[error("{0}")]
    Temporary(String),
    /// Stripe refused the request itself (4xx): trying again will not help.
    #[error("{0}")]
    Refused(String),
}

impl From<StripeError> for StripeFailure {
    fn from(error: StripeError) -> Self {
        match error {
            StripeError::Stripe(errors, status) => {
                let what = format!(
                    "Stripe answered {status}: {} ({})",
                    errors.message.as_deref().unwrap_or("no message"),
                    errors.code.as_ref().map_or("no code", |c| c.as_str()),
                );
                if status == 409 || status == 429 || status >= 500 {
                    StripeFailure::Temporary(what)
                } else {
                    StripeFailure::Refused(what)
                }
            }
            StripeError::ConfigError(what) => StripeFailure::Refused(what),
            StripeError::Timeout => {
                StripeFailure::Temporary("Stripe did not answer in time".into())
            }
            other => StripeFailure::Temporary(other.to_string()),
        }
    }
}

/// A PaymentIntent as the customer's app needs it.
#[derive(Debug, Clone)]
pub struct CreatedIntent {
    pub id: String,
    pub client_secret: String,
    pub amount_cents: i64,
    pub currency: String,
}

/// The engine's Stripe client.
#[derive(Clone)]
pub struct StripeGateway {
    client: ::stripe::Client,
}

fn idempotent(key: &str) -> Result<RequestStrategy, StripeFailure> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| StripeFailure::Refused(format!("idempotency key {key:?}: {e}")))
}

fn job_metadata(job_id: &str) -> HashMap<String, String> {
    HashMap::from([("job_id".to_owned(), job_id.to_owned())])
}

/// The metadata of a money movement: the job, and the outbox key that made it, by which a
/// later attempt finds it (Stripe forgets idempotency keys after 24 hours).
fn movement_metadata(job_id: &str, key: &str) -> HashMap<String, String> {
    let mut metadata = job_metadata(job_id);
    metadata.insert(OUTBOX_KEY.to_owned(), key.to_owned());
    metadata
}

/// The metadata field naming the outbox entry that made a transfer or refund.
const OUTBOX_KEY: &str = "outbox_key";

impl StripeGateway {
    /// A client for the configured key and base URL; `None` when payments are off.
    pub fn new(settings: &StripeSettings) -> Result<Option<Self>, StripeError> {
        let Some(key) = &settings.secret_key else {
            return Ok(None);
        };
        // async-stripe joins `{base}v1/...`: the base must end with a slash.
        let mut base = settings.api_base.as_str().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = ::stripe::ClientBuilder::new(key.expose_secret())
            .url(base)
            .timeout(CALL_TIMEOUT)
            .build()?;
        Ok(Some(Self { client }))
    }

    /// THE PaymentIntent of a job: the total in USD, tagged with the job and grouped with the
    /// driver's later transfer (separate charges and transfers).
    pub async fn create_payment_intent(
        &self,
        job_id: &str,
        amount_cents: i64,
        key: &str,
    ) -> Result<CreatedIntent, StripeFailure> {
        let intent = CreatePaymentIntent::new(amount_cents, Currency::USD)
            .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods {
                allow_redirects: None,
                enabled: true,
            })
            .description(format!("Umuve junk removal, job {job_id}"))
            .metadata(job_metadata(job_id))
            .transfer_group(job_id)
            .customize()
            .request_strategy(idempotent(key)?)
            .send(&self.client)
            .await?;
        let client_secret = intent.client_secret.ok_or_else(|| {
            StripeFailure::Temporary("Stripe returned a PaymentIntent without client_secret".into())
        })?;
        Ok(CreatedIntent {
            id: intent.id.to_string(),
            client_secret,
            amount_cents: intent.amount,
            currency: intent.currency.to_string(),
        })
    }

    /// Pays a driver's connected account; returns the transfer's id.
    pub async fn create_transfer(
        &self,
        payout: &Payout<'_>,
        key: &str,
    ) -> Result<String, StripeFailure> {
        let mut transfer = CreateTransfer::new(Currency::USD, payout.destination)
            .amount(payout.amount_cents)
            .transfer_group(payout.job_id)
            .description(format!("Umuve payout, job {}", payout.job_id))
            .metadata(movement_metadata(payout.job_id, key));
        if let Some(charge) = payout.source_charge {
            // Funds come from this job's own charge, so the transfer does not wait on the
            // platform's available balance.
            transfer = transfer.source_transaction(charge);
        }
        let transfer = transfer
            .customize()
            .request_strategy(idempotent(key)?)
            .send(&self.client)
            .await?;
        Ok(transfer.id.to_string())
    }

    /// The transfer an earlier attempt with `key` made for the job, if any (the job's transfer
    /// group holds a handful at most).
    pub async fn find_transfer(
        &self,
        job_id: &str,
        key: &str,
    ) -> Result<Option<String>, StripeFailure> {
        let transfers = ListTransfer::new()
            .transfer_group(job_id)
            .limit(100)
            .send(&self.client)
            .await?;
        Ok(transfers
            .data
            .into_iter()
            .find(|t| t.metadata.get(OUTBOX_KEY).map(String::as_str) == Some(key))
            .map(|t| t.id.to_string()))
    }

    /// The refund an earlier attempt with `key` made on the PaymentIntent, if any.
    pub async fn find_refund(
        &self,
        payment_intent: &str,
        key: &str,
    ) -> Result<Option<String>, StripeFailure> {
        let refunds = ListRefund::new()
            .payment_intent(payment_intent)
            .limit(100)
            .send(&self.client)
            .await?;
        Ok(refunds
            .data
            .into_iter()
            .find(|r| {
                r.metadata
                    .as_ref()
                    .and_then(|m| m.get(OUTBOX_KEY))
                    .map(String::as_str)
                    == Some(key)
            })
            .map(|r| r.id.to_string()))
    }

    /// Refunds part or all of a job's payment; returns the refund's id.
    pub async fn create_refund(
        &self,
        job_id: &str,
        payment_intent: &str,
        amount_cents: i64,
        key: &str,
    ) -> Result<String, StripeFailure> {
        let refund = CreateRefund::new()
            .payment_intent(payment_intent)
            .amount(amount_cents)
            .metadata(movement_metadata(job_id, key))
            .customize()
            .request_strategy(idempotent(key)?)
            .send(&self.client)
            .await?;
        Ok(refund.id.to_string())
    }

    /// An Express account for a driver (transfers capability); returns its id.
    pub async fn create_express_account(
        &self,
        driver_id: &str,
        email: Option<&str>,
        key: &str,
    ) -> Result<String, StripeFailure> {
        let mut capabilities = CreateAccountCapabilities::new();
        capabilities.transfers = Some(CreateAccountCapabilitiesTransfers {
            requested: Some(true),
        });
        let mut account = CreateAccount::new()
            .type_(CreateAccountType::Express)
            .country("US")
            .capabilities(capabilities)
            .metadata(HashMap::from([(
                "driver_id".to_owned(),
                driver_id.to_owned(),
            )]));
        if let Some(email) = email {
            account = account.email(email);
        }
        let account = account
            .customize()
            .request_strategy(idempotent(key)?)
            .send(&self.client)
            .await?;
        Ok(account.id.to_string())
    }

    /// A single-use onboarding link for a connected account. Links expire within minutes, so
    /// each request makes a new one (no idempotency key).
    pub async fn create_onboarding_link(
        &self,
        account: &str,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String, StripeFailure> {
        let link = CreateAccountLink::new(account, CreateAccountLinkType::AccountOnboarding)
            .refresh_url(refresh_url)
            .return_url(return_url)
            .send(&self.client)
            .await?;
        Ok(link.url)
    }
}

/// What a driver's transfer needs.
#[derive(Debug)]
pub struct Payout<'a> {
    pub job_id: &'a str,
    pub amount_cents: i64,
    /// The driver's connected account (`acct_…`).
    pub destination: &'a str,
    /// The job's charge (`ch_…`), when known.
    pub source_charge: Option<&'a str>,
}
