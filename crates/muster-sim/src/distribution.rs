//! Latency distributions of simulated agents, and how they are written in files.
//!
//! Owns [`Distribution`]: its file format (tagged by `kind`), its checks and its seeded
//! sampling. Durations follow one rule: **every duration field (`value`, `min`, `max`,
//! `mean`, `std_dev`) is a humantime string (`"250ms"`, `"1m 30s"`) or a number of seconds
//! (`0.25`)**. The log-normal's `mu` and `sigma` are not durations but the parameters of
//! `ln(seconds)`, so they are plain numbers. Samples are clamped at zero (a normal
//! distribution never makes an agent answer before it was asked). It must not read a clock
//! or a global RNG: every draw comes from the [`SimRng`] it is given (G6).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{InvalidModel, SimRng};

/// The longest latency a sample can be (about 31 years): keeps `Instant + latency` finite
/// whatever the parameters.
const MAX_SECS: f64 = 1.0e9;

/// A distribution of latencies (in seconds).
///
/// In a manifest:
/// ```toml
/// [backend.latency]
/// kind = "lognormal"   # fixed | uniform | normal | lognormal | exponential
/// mu = 0.0             # ln(seconds): the median is e^mu = 1 s
/// sigma = 0.5
/// ```
///
/// # Example
/// ```
/// use muster_sim::{Distribution, SimRng};
/// use std::time::Duration;
///
/// let d: Distribution = serde_json::from_value(serde_json::json!(
///     {"kind": "uniform", "min": "100ms", "max": 2})).unwrap();
/// d.validate().unwrap();
/// let mut rng = SimRng::new(7);
/// let x = d.sample(&mut rng);
/// assert!(x >= Duration::from_millis(100) && x <= Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// Always `value`.
    Fixed {
        /// The latency.
        #[serde(with = "secs")]
        value: f64,
    },
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lower bound.
        #[serde(with = "secs")]
        min: f64,
        /// Upper bound.
        #[serde(with = "secs")]
        max: f64,
    },
    /// Normal (Gaussian), clamped at zero.
    Normal {
        /// The mean.
        #[serde(with = "secs")]
        mean: f64,
        /// The standard deviation.
        #[serde(with = "secs")]
        std_dev: f64,
    },
    /// Log-normal: `ln(seconds)` is normal with mean `mu` and standard deviation `sigma`
    /// (median `e^mu` seconds; a long right tail, like real model latencies).
    Lognormal {
        /// Mean of `ln(seconds)`.
        mu: f64,
        /// Standard deviation of `ln(seconds)`.
        sigma: f64,
    },
    /// Exponential with the given mean (memoryless arrivals).
    Exponential {
        /// The mean.
        #[serde(with = "secs")]
        mean: f64,
    },
}

impl Default for Distribution {
    /// No latency: `fixed 0`.
    fn default() -> Self {
        Distribution::Fixed { value: 0.0 }
    }
}

impl Distribution {
    /// A fixed latency.
    ///
    /// # Example
    /// ```
    /// use muster_sim::{Distribution, SimRng};
    /// use std::time::Duration;
    /// let d = Distribution::fixed(Duration::from_secs(3600));
    /// assert_eq!(d.sample(&mut SimRng::new(1)), Duration::from_secs(3600));
    /// ```
    pub fn fixed(d: Duration) -> Self {
        Distribution::Fixed {
            value: d.as_secs_f64(),
        }
    }

    /// Checks the parameters; the error names the field (relative to the distribution,
    /// e.g. `std_dev`) and what was expected.
    ///
    /// # Example
    /// ```
    /// use muster_sim::Distribution;
    /// let d = Distribution::Normal { mean: 1.0, std_dev: -0.5 };
    /// let e = d.validate().unwrap_err();
    /// assert_eq!(e.field, "std_dev");
    /// assert_eq!(e.to_string(), "std_dev: must be >= 0 (got -0.5)");
    /// ```
    pub fn validate(&self) -> Result<(), InvalidModel> {
        let non_negative = |field: &str, v: f64| -> Result<(), InvalidModel> {
            if !v.is_finite() {
                Err(InvalidModel::new(
                    field,
                    format!("must be a finite number (got {v})"),
                ))
            } else if v < 0.0 {
                Err(InvalidModel::new(field, format!("must be >= 0 (got {v})")))
            } else {
                Ok(())
            }
        };
        let finite = |field: &str, v: f64| -> Result<(), InvalidModel> {
            if v.is_finite() {
                Ok(())
            } else {
                Err(InvalidModel::new(
                    field,
                    format!("must be a finite number (got {v})"),
                ))
            }
        };
        match *self {
            Distribution::Fixed { value } => non_negative("value", value),
            Distribution::Uniform { min, max } => {
                non_negative("min", min)?;
                non_negative("max", max)?;
                if min > max {
                    return Err(InvalidModel::new(
                        "min",
                        format!("uniform: min must be <= max (got min {min}s, max {max}s)"),
                    ));
                }
                Ok(())
            }
            Distribution::Normal { mean, std_dev } => {
                non_negative("mean", mean)?;
                non_negative("std_dev", std_dev)
            }
            Distribution::Lognormal { mu, sigma } => {
                finite("mu", mu)?;
                non_negative("sigma", sigma)
            }
            Distribution::Exponential { mean } => non_negative("mean", mean),
        }
    }

    /// Draws one latency from `rng`, clamped to `[0, ~31 years]`. Parameters that
    /// [`Distribution::validate`] refuses give a zero latency rather than a panic.
    pub fn sample(&self, rng: &mut SimRng) -> Duration {
        let secs = match *self {
            Distribution::Fixed { value } => value,
            Distribution::Uniform { min, max } => min + (max - min) * rng.next_f64(),
            Distribution::Normal { mean, std_dev } => mean + std_dev * rng.standard_normal(),
            Distribution::Lognormal { mu, sigma } => (mu + sigma * rng.standard_normal()).exp(),
            // 1 - u is in (0, 1], so ln never sees 0.
            Distribution::Exponential { mean } => -mean * (1.0 - rng.next_f64()).ln(),
        };
        if secs.is_nan() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(secs.clamp(0.0, MAX_SECS))
    }
}

/// Serde for a duration field held as seconds: a humantime string or a number of seconds
/// in, a number of seconds out.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(s),
            Raw::Text(t) => humantime::parse_duration(t.trim())
                .map(|d| d.as_secs_f64())
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "`{t}` is not a duration ({e}); write e.g. \"250ms\", \"1m\" or a number of seconds"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Distribution {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn durations_are_humantime_strings_or_seconds() {
        assert_eq!(
            parse(json!({"kind": "fixed", "value": "250ms"})),
            Distribution::Fixed { value: 0.25 }
        );
        assert_eq!(
            parse(json!({"kind": "fixed", "value": 2})),
            Distribution::Fixed { value: 2.0 }
        );
        assert_eq!(
            parse(json!({"kind": "exponential", "mean": "1m"})),
            Distribution::Exponential { mean: 60.0 }
        );
        let bad = serde_json::from_value::<Distribution>(json!({"kind": "fixed", "value": "soon"}));
        assert!(bad.unwrap_err().to_string().contains("not a duration"));
        let unknown =
            serde_json::from_value::<Distribution>(json!({"kind": "fixed", "value": 1, "x": 2}));
        assert!(unknown.is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let e = Distribution::Uniform { min: 2.0, max: 1.0 }
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "min");
        assert!(e.message.contains("uniform: min must be <= max"));
        let e = Distribution::Fixed { value: -1.0 }.validate().unwrap_err();
        assert_eq!(e.field, "value");
        let e = Distribution::Exponential { mean: f64::NAN }
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "mean");
        assert!(
            Distribution::Lognormal {
                mu: -2.0,
                sigma: 0.3
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn samples_are_clamped_at_zero_and_reproducible() {
        let d = Distribution::Normal {
            mean: 0.0,
            std_dev: 10.0,
        };
        let mut r1 = SimRng::new(3);
        let mut r2 = SimRng::new(3);
        for _ in 0..1000 {
            let a = d.sample(&mut r1);
            assert_eq!(a, d.sample(&mut r2));
        }
        let mut r = SimRng::new(5);
        let n = 20_000;
        let mean: f64 = (0..n)
            .map(|_| {
                Distribution::Exponential { mean: 2.0 }
                    .sample(&mut r)
                    .as_secs_f64()
            })
            .sum::<f64>()
            / n as f64;
        assert!((mean - 2.0).abs() < 0.1, "exponential mean {mean}");
        let huge = Distribution::Lognormal {
            mu: 1000.0,
            sigma: 0.0,
        };
        assert_eq!(huge.sample(&mut r), Duration::from_secs_f64(MAX_SECS));
    }
}
