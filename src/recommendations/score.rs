//! The ranking formula: score = Σ weight(action) × quantity × decay(age), with exponential decay
//! of half-life `h` (an event one half-life old counts half).
//!
//! Stored with forward decay: each event adds `w·q·2^((t_event − t0)/h)` to an accumulator that
//! is never rewritten; ranking by the accumulator equals ranking by the decayed score at any
//! instant, and the score at `now` is `acc / 2^((now − t0)/h)`. When `(now − t0)/h` grows large
//! the base is moved forward ([`Decay::rebase_factor`]), multiplying every accumulator by the
//! same factor: order and reported scores are unchanged.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use recsys_schema::events::Action;

/// Move t0 forward once events are this many half-lives past it (2^256 is far from f64's limit).
pub const REBASE_AFTER_HALF_LIVES: f64 = 256.0;

/// Weight of each action (`RANKING_WEIGHTS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub view: f64,
    pub cart_add: f64,
    pub cart_remove: f64,
    pub purchase: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            view: 1.0,
            cart_add: 3.0,
            cart_remove: -3.0,
            purchase: 10.0,
        }
    }
}

impl Weights {
    /// The weight of `action`.
    pub fn of(&self, action: Action) -> f64 {
        match action {
            Action::View => self.view,
            Action::CartAdd => self.cart_add,
            Action::CartRemove => self.cart_remove,
            Action::Purchase => self.purchase,
        }
    }
}

/// Parses `view=1,cart_add=3,cart_remove=-3,purchase=10`; unnamed actions keep their default.
impl FromStr for Weights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = Weights::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("expected action=weight, got {part:?}"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} is not a number"))?;
            if !value.is_finite() {
                return Err(format!("weight of {name} must be finite"));
            }
            match name.trim() {
                "view" => weights.view = value,
                "cart_add" => weights.cart_add = value,
                "cart_remove" => weights.cart_remove = value,
                "purchase" => weights.purchase = value,
                other => return Err(format!("unknown action {other:?}")),
            }
        }
        Ok(weights)
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "view={},cart_add={},cart_remove={},purchase={}",
            self.view, self.cart_add, self.cart_remove, self.purchase
        )
    }
}

/// A duration written as `24h`, `90m`, `30s`, `2d` or plain seconds (`RANKING_HALF_LIFE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalfLife(pub Duration);

impl FromStr for HalfLife {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => s.split_at(i),
            None => (s, "s"),
        };
        let number: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("bad duration {s:?}"))?;
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h or d)")),
        };
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err("a half-life must be positive".into());
        }
        Ok(HalfLife(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for HalfLife {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs_f64())
    }
}

/// The half-lives of the two rankings (`RANKING_HALF_LIFE`, `RANKING_TRENDING_HALF_LIFE`).
#[derive(Debug, Clone, Copy)]
pub struct HalfLives {
    pub popular: Duration,
    pub trending: Duration,
}

impl HalfLives {
    /// The two decays from their base times.
    pub fn decays(&self, t0: DateTime<Utc>, trend_t0: DateTime<Utc>) -> Decays {
        Decays {
            popular: Decay {
                half_life: self.popular,
                t0,
            },
            trending: Decay {
                half_life: self.trending,
                t0: trend_t0,
            },
        }
    }
}

/// The two decays a ranking keeps: popularity and trending (a shorter half-life).
#[derive(Debug, Clone, Copy)]
pub struct Decays {
    pub popular: Decay,
    pub trending: Decay,
}

/// Forward decay with base time `t0`.
#[derive(Debug, Clone, Copy)]
pub struct Decay {
    pub half_life: Duration,
    pub t0: DateTime<Utc>,
}

impl Decay {
    fn half_lives(&self, t: DateTime<Utc>) -> f64 {
        (t - self.t0).num_microseconds().unwrap_or(i64::MAX) as f64
            / 1e6
            / self.half_life.as_secs_f64()
    }

    /// What an event of `weight × quantity` at `at` adds to its product's accumulator.
    pub fn contribution(&self, weight: f64, quantity: u32, at: DateTime<Utc>) -> f64 {
        weight * f64::from(quantity) * 2f64.powf(self.half_lives(at))
    }

    /// The decayed score at `now` of accumulator `acc`.
    pub fn score(&self, acc: f64, now: DateTime<Utc>) -> f64 {
        acc / 2f64.powf(self.half_lives(now))
    }

    /// `Some(factor)` when t0 should move to `now`: multiply every accumulator by `factor`.
    pub fn rebase_factor(&self, now: DateTime<Utc>) -> Option<f64> {
        let n = self.half_lives(now);
        (n > REBASE_AFTER_HALF_LIVES).then(|| 2f64.powf(-n))
    }

    /// Moves t0 to `now` when it is due ([`Decay::rebase_factor`]); answers the factor every
    /// accumulator must then be multiplied by.
    pub fn rebase(&mut self, now: DateTime<Utc>) -> Option<f64> {
        let factor = self.rebase_factor(now)?;
        self.t0 = now;
        Some(factor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A decay with a one-hour half-life from 2026-01-01 (shared with other unit tests).
    pub(crate) fn decay() -> Decay {
        Decay {
            half_life: Duration::from_secs(3600),
            t0: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    /// Default weights are view 1, cart_add 3, cart_remove −3, purchase 10; the setting parses.
    fn weights_parse_and_default() {
        let w = Weights::default();
        assert_eq!(
            [
                w.of(Action::View),
                w.of(Action::CartAdd),
                w.of(Action::CartRemove),
                w.of(Action::Purchase)
            ],
            [1.0, 3.0, -3.0, 10.0]
        );
        let parsed: Weights = "view=0.5, purchase=20".parse().unwrap();
        assert_eq!(
            (parsed.view, parsed.cart_add, parsed.purchase),
            (0.5, 3.0, 20.0)
        );
        assert_eq!(w.to_string().parse::<Weights>().unwrap(), w);
        for bad in ["view", "view=x", "like=1", "view=inf"] {
            assert!(bad.parse::<Weights>().is_err(), "{bad}");
        }
    }

    #[test]
    /// Half-lives parse with units.
    fn half_lives_parse() {
        assert_eq!(
            "24h".parse::<HalfLife>().unwrap().0,
            Duration::from_secs(86400)
        );
        assert_eq!(
            "90m".parse::<HalfLife>().unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            "1d".parse::<HalfLife>().unwrap().0,
            Duration::from_secs(86400)
        );
        assert_eq!("30".parse::<HalfLife>().unwrap().0, Duration::from_secs(30));
        assert!("0h".parse::<HalfLife>().is_err());
        assert!("3w".parse::<HalfLife>().is_err());
    }

    #[test]
    /// An event one half-life old counts half; two half-lives, a quarter.
    fn one_half_life_halves() {
        let d = decay();
        let at = d.t0 + chrono::Duration::hours(5);
        let acc = d.contribution(10.0, 2, at);
        assert!(close(d.score(acc, at), 20.0));
        assert!(close(d.score(acc, at + chrono::Duration::hours(1)), 10.0));
        assert!(close(d.score(acc, at + chrono::Duration::hours(2)), 5.0));
    }

    #[test]
    /// A newer event outranks an older one of the same weight; order never changes with time.
    fn ordering_follows_recency_and_weight() {
        let d = decay();
        let old = d.contribution(10.0, 1, d.t0 + chrono::Duration::hours(1));
        let new = d.contribution(10.0, 1, d.t0 + chrono::Duration::hours(2));
        let heavy_old = d.contribution(30.0, 1, d.t0 + chrono::Duration::hours(1));
        assert!(new > old);
        assert!(heavy_old > new);
        for later in [3, 50, 200] {
            let now = d.t0 + chrono::Duration::hours(later);
            assert!(d.score(heavy_old, now) > d.score(new, now));
            assert!(d.score(new, now) > d.score(old, now));
        }
    }

    #[test]
    /// Rebasing multiplies accumulators by one factor: order and reported scores are unchanged.
    fn rebase_keeps_order_and_values() {
        let d = decay();
        let far = d.t0 + chrono::Duration::hours(300);
        let accs = [
            d.contribution(1.0, 1, far - chrono::Duration::hours(2)),
            d.contribution(10.0, 3, far - chrono::Duration::hours(5)),
            d.contribution(-3.0, 1, far),
        ];
        let factor = d
            .rebase_factor(far)
            .expect("300 half-lives is past the threshold");
        let rebased = Decay { t0: far, ..d };
        let moved: Vec<f64> = accs.iter().map(|a| a * factor).collect();
        for (a, m) in accs.iter().zip(&moved) {
            assert!(close(d.score(*a, far), rebased.score(*m, far)));
        }
        let order = |v: &[f64]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&i, &j| v[j].partial_cmp(&v[i]).unwrap());
            idx
        };
        assert_eq!(order(&accs), order(&moved));
        assert!(d
            .rebase_factor(d.t0 + chrono::Duration::hours(10))
            .is_none());
    }
}
