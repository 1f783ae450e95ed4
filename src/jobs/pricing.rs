//! Prices: a table per load size, a service fee, and the platform's commission on the price.

use serde::Serialize;
use umuve_actors::realtime::model::LoadSize;

use crate::config::PricingSettings;

/// What a job costs and who gets what. Total = price + fee; the platform keeps commission +
/// fee; the driver gets price − commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub price_cents: i64,
    pub service_fee_cents: i64,
    pub commission_cents: i64,
    pub total_cents: i64,
    pub driver_payout_cents: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Pricing(PricingSettings);

impl Pricing {
    pub fn new(settings: PricingSettings) -> Self {
        Self(settings)
    }

    pub fn quote(&self, size: LoadSize) -> Quote {
        let price = self.0.load_size_prices_cents[size.index()];
        // Commission rounds half up to the cent, in integer arithmetic.
        let commission = (price * i64::from(self.0.commission_percent) + 50) / 100;
        Quote {
            price_cents: price,
            service_fee_cents: self.0.service_fee_cents,
            commission_cents: commission,
            total_cents: price + self.0.service_fee_cents,
            driver_payout_cents: price - commission,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_LOAD_SIZE_PRICES_CENTS;

    #[test]
    fn the_driver_gets_the_price_less_commission_and_the_customer_pays_the_fee() {
        let pricing = Pricing::new(PricingSettings {
            commission_percent: 20,
            service_fee_cents: 1500,
            load_size_prices_cents: DEFAULT_LOAD_SIZE_PRICES_CENTS,
        });
        let quote = pricing.quote(LoadSize::Half);
        assert_eq!(
            quote,
            Quote {
                price_cents: 29_900,
                service_fee_cents: 1_500,
                commission_cents: 5_980,
                total_cents: 31_400,
                driver_payout_cents: 23_920,
            }
        );
        for size in LoadSize::ALL {
            let q = pricing.quote(size);
            assert_eq!(q.total_cents, q.price_cents + q.service_fee_cents);
            assert_eq!(q.driver_payout_cents + q.commission_cents, q.price_cents);
        }
    }

    #[test]
    fn commission_rounds_to_the_nearest_cent() {
        let pricing = Pricing::new(PricingSettings {
            commission_percent: 15,
            service_fee_cents: 0,
            load_size_prices_cents: [9_999, 1, 3, 10, 101],
        });
        assert_eq!(pricing.quote(LoadSize::SingleItem).commission_cents, 1_500);
        assert_eq!(pricing.quote(LoadSize::Quarter).commission_cents, 0);
        assert_eq!(pricing.quote(LoadSize::Half).commission_cents, 0);
        assert_eq!(pricing.quote(LoadSize::ThreeQuarter).commission_cents, 2);
    }
}
