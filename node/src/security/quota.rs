//! Client quota enforcement (KIP-13, KIP-124, KIP-219): per-entity rates measured as
//! Kafka's metrics measure them (a `SampledStat` of `SAMPLES` windows of `WINDOW_MS`), and
//! the throttle time Kafka's quota managers compute from them. Pure: every call takes the
//! time, so the arithmetic is tested with an injected clock.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use strata_security::quota::{resolve, QuotaKey, QuotaMap};

/// Kafka's `quota.window.size.seconds` (1), in milliseconds.
pub const WINDOW_MS: i64 = 1000;
/// Kafka's `quota.window.num`.
pub const SAMPLES: usize = 11;
/// Request-time throttles are capped at one window, as Kafka's ClientRequestQuotaManager.
pub const MAX_REQUEST_THROTTLE_MS: i64 = WINDOW_MS;

/// One sample window: when it started and what was recorded in it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    value: f64,
}

/// Kafka's `Rate` over a `SampledStat` (sum per window): samples start when the first
/// value after the previous window's end is recorded, samples older than all windows
/// together are reset, and the elapsed time is at least `SAMPLES - 1` windows.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    /// Adds `value` (bytes, or percent-seconds of a thread) at `now_ms`.
    pub fn record(&mut self, value: f64, now_ms: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample {
                start_ms: now_ms,
                value: 0.0,
            });
            self.current = 0;
        }
        if now_ms - self.samples[self.current].start_ms >= WINDOW_MS {
            self.current = (self.current + 1) % SAMPLES;
            let fresh = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
    }

    fn purge(&mut self, now_ms: i64) {
        let expire = SAMPLES as i64 * WINDOW_MS;
        for s in &mut self.samples {
            if now_ms - s.start_ms >= expire {
                *s = Sample {
                    start_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// The time the rate is measured over, in milliseconds (Kafka's `Rate.windowSize`).
    pub fn window_ms(&mut self, now_ms: i64) -> i64 {
        self.purge(now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed = now_ms - oldest;
        let full = elapsed / WINDOW_MS;
        let min_full = SAMPLES as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * WINDOW_MS;
        }
        elapsed
    }

    /// Units per second.
    pub fn measure(&mut self, now_ms: i64) -> f64 {
        let window = self.window_ms(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (window as f64 / 1000.0)
    }

    /// Whether every sample is empty or expired (the rate measures zero).
    fn idle(&self, now_ms: i64) -> bool {
        self.samples
            .iter()
            .all(|s| s.value == 0.0 || now_ms - s.start_ms >= SAMPLES as i64 * WINDOW_MS)
    }
}

/// Kafka's `QuotaUtils.throttleTime`: how long the client must wait for `rate`, measured
/// over `window_ms`, to come back to `bound`. Zero when within the bound.
pub fn throttle_ms(rate: f64, bound: f64, window_ms: i64) -> i64 {
    if rate <= bound || bound <= 0.0 {
        return 0;
    }
    ((rate - bound) / bound * window_ms as f64).round() as i64
}

/// Who a rate belongs to: Kafka's quota metric tags. The user tag is the user when the
/// applying quota is set on a user (named or default), else empty; likewise the client id.
type Tags = (QuotaKey, String, String);

/// The node's quotas and the rates measured against them.
#[derive(Default)]
pub struct Quotas {
    quotas: RwLock<Arc<QuotaMap>>,
    rates: Mutex<HashMap<Tags, Rate>>,
}

/// A quota that applies to a client: its bound and the rate it is measured with.
struct Applied {
    tags: Tags,
    bound: f64,
}

impl Quotas {
    /// Installs the quotas of a new metadata image; rates measured so far are kept.
    pub fn set(&self, quotas: Arc<QuotaMap>) {
        *self.quotas.write() = quotas;
    }

    /// Whether no quota is set at all (the request path then does nothing).
    pub fn is_empty(&self) -> bool {
        self.quotas.read().is_empty()
    }

    fn applied(&self, user: &str, client_id: &str, key: QuotaKey) -> Option<Applied> {
        let quotas = self.quotas.read().clone();
        let (entity, bound) = resolve(&quotas, user, client_id, key)?;
        let tags = (
            key,
            entity
                .user
                .as_ref()
                .map_or(String::new(), |_| user.to_string()),
            entity
                .client_id
                .as_ref()
                .map_or(String::new(), |_| client_id.to_string()),
        );
        Some(Applied { tags, bound })
    }

    /// Whether a quota of `key` applies to (user, client id).
    pub fn limited(&self, user: &str, client_id: &str, key: QuotaKey) -> bool {
        !self.is_empty() && self.applied(user, client_id, key).is_some()
    }

    /// Records `value` against the quota of `key` that applies to (user, client id) and
    /// returns the throttle time in milliseconds (0 without a quota or within it).
    pub fn record(
        &self,
        user: &str,
        client_id: &str,
        key: QuotaKey,
        value: f64,
        now_ms: i64,
    ) -> i64 {
        if self.is_empty() {
            return 0;
        }
        let Some(a) = self.applied(user, client_id, key) else {
            return 0;
        };
        let mut rates = self.rates.lock();
        // Rates whose every sample has expired measure zero: dropping them loses nothing
        // and bounds the map by the clients seen in the last SAMPLES windows.
        if rates.len() > 1024 {
            rates.retain(|_, r| !r.idle(now_ms));
        }
        let rate = rates.entry(a.tags).or_default();
        rate.record(value, now_ms);
        let measured = rate.measure(now_ms);
        let t = throttle_ms(measured, a.bound, rate.window_ms(now_ms));
        if key == QuotaKey::RequestPercentage {
            t.min(MAX_REQUEST_THROTTLE_MS)
        } else {
            t
        }
    }

    /// Takes back a recorded value (a throttled fetch answers without its data, as Kafka).
    pub fn unrecord(&self, user: &str, client_id: &str, key: QuotaKey, value: f64, now_ms: i64) {
        if let Some(a) = self.applied(user, client_id, key) {
            if let Some(rate) = self.rates.lock().get_mut(&a.tags) {
                rate.record(-value, now_ms);
            }
        }
    }

    /// The most one quota window may carry (Kafka's `getMaxValueInQuotaWindow`): fetches
    /// are capped at this so that a response never exceeds what the quota can let through.
    pub fn max_in_window(&self, user: &str, client_id: &str, key: QuotaKey) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        self.applied(user, client_id, key)
            .map(|a| a.bound * (SAMPLES as f64 - 1.0) * (WINDOW_MS as f64 / 1000.0))
    }
}

/// Milliseconds on a monotonic clock (the time quotas are measured on).
pub fn mono_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_security::quota::{EntityName, QuotaEntity, QuotaValue};

    #[test]
    fn a_young_rate_is_measured_over_the_minimum_window() {
        let mut r = Rate::default();
        r.record(10_000.0, 0);
        // Less than SAMPLES - 1 full windows: the elapsed time is padded to 10 s.
        assert_eq!(r.window_ms(0), 10_000);
        assert_eq!(r.measure(0), 1000.0);
        // Half a window later: 20 KB over 0.5 s padded by 10 windows.
        r.record(10_000.0, 500);
        assert_eq!(r.window_ms(500), 10_500);
        assert!((r.measure(500) - 20_000.0 / 10.5).abs() < 1e-9);
        // A new sample starts a window after the first one.
        r.record(5_000.0, 1_200);
        assert_eq!(r.window_ms(1_200), 10_000 + 200);
        assert!((r.measure(1_200) - 25_000.0 / 10.2).abs() < 1e-9);
    }

    #[test]
    fn samples_expire_after_all_windows() {
        let mut r = Rate::default();
        for t in 0..11 {
            r.record(1000.0, t * 1000);
        }
        // 11 windows, oldest at 0: 11 000 bytes over 10 s.
        assert_eq!(r.measure(10_000), 1100.0);
        // At 11 s the first sample (0 s) has expired and was reset to now.
        assert_eq!(r.window_ms(11_000), 10_000);
        assert_eq!(r.measure(11_000), 1000.0);
        // Long after, everything has expired.
        assert_eq!(r.measure(60_000), 0.0);
        assert!(r.idle(60_000));
    }

    #[test]
    fn throttle_time_is_kafkas() {
        assert_eq!(throttle_ms(900.0, 1000.0, 10_000), 0);
        assert_eq!(throttle_ms(1000.0, 1000.0, 10_000), 0);
        // Twice the bound over 10 s: wait another 10 s.
        assert_eq!(throttle_ms(2000.0, 1000.0, 10_000), 10_000);
        assert_eq!(throttle_ms(1100.0, 1000.0, 10_500), 1050);
    }

    fn quotas(entries: &[(QuotaEntity, QuotaKey, f64)]) -> Quotas {
        let q = Quotas::default();
        let mut m = QuotaMap::new();
        for (e, k, v) in entries {
            m.entry(e.clone()).or_default().insert(*k, QuotaValue(*v));
        }
        q.set(Arc::new(m));
        q
    }

    #[test]
    fn producers_over_their_rate_are_throttled() {
        let k = QuotaKey::ProducerByteRate;
        let alice = QuotaEntity {
            user: Some(EntityName::Named("alice".into())),
            client_id: None,
        };
        let q = quotas(&[(alice, k, 1000.0)]);
        // 10 KB in 10 s is exactly the rate: no throttle.
        assert_eq!(q.record("alice", "a", k, 10_000.0, 0), 0);
        // Another 1 KB 100 ms later: 11 KB over 10.1 s is 1089 B/s, and
        // (1089.1 - 1000) / 1000 * 10.1 s = 900 ms.
        assert_eq!(q.record("alice", "a", k, 1_000.0, 100), 900);
        // Alice's clients share her user quota.
        assert_eq!(q.record("alice", "b", k, 1.0, 200), 801);
        // Bob has none; alice has no consumer quota.
        assert_eq!(q.record("bob", "a", k, 1e9, 300), 0);
        assert_eq!(
            q.record("alice", "a", QuotaKey::ConsumerByteRate, 1e9, 300),
            0
        );
        // Unrecording brings the rate back.
        q.unrecord("alice", "b", k, 1.0, 300);
        q.unrecord("alice", "a", k, 1_000.0, 300);
        assert_eq!(q.record("alice", "a", k, 0.0, 300), 0);
        assert_eq!(q.max_in_window("alice", "x", k), Some(10_000.0));
        assert_eq!(q.max_in_window("bob", "x", k), None);
    }

    #[test]
    fn default_user_quotas_are_measured_per_user_and_request_throttles_capped() {
        let k = QuotaKey::RequestPercentage;
        let any_user = QuotaEntity {
            user: Some(EntityName::Default),
            client_id: None,
        };
        let q = quotas(&[(any_user, k, 10.0)]);
        // 10% of a thread over 10 s is 1 thread-second; 2 s of handler time is far over,
        // but the throttle stops at one window.
        assert_eq!(q.record("u1", "c", k, 200.0, 0), MAX_REQUEST_THROTTLE_MS);
        // Another user has a rate of its own.
        assert_eq!(q.record("u2", "c", k, 50.0, 0), 0);
    }
}
