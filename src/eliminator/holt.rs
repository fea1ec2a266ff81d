//! Trend arithmetic for predicted exhaustion: Holt's linear smoothing for the forecast, and
//! the t-statistic of a least-squares slope as the guard that keeps noise from forecasting.

/// Smoothing factors: `alpha` for the level, `beta` for the trend, each in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltParams {
    pub alpha: f64,
    pub beta: f64,
}

impl Default for HoltParams {
    fn default() -> Self {
        HoltParams {
            alpha: 0.5,
            beta: 0.3,
        }
    }
}

/// Where Holt's smoothing ends: the smoothed value at the last point and the trend per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltFit {
    pub level: f64,
    pub trend: f64,
}

impl HoltFit {
    /// Steps until the forecast `level + h * trend` reaches `limit`: 0 when already there,
    /// `None` when the trend does not rise towards it.
    pub fn steps_to_reach(&self, limit: f64) -> Option<f64> {
        if self.level >= limit {
            return Some(0.0);
        }
        if self.trend <= 0.0 || !self.trend.is_finite() {
            return None;
        }
        Some((limit - self.level) / self.trend)
    }
}

/// Holt's linear (double exponential) smoothing over equally spaced points. The level starts
/// at the first point and the trend at the first difference. `None` below two points.
pub fn holt_linear(series: &[f64], params: HoltParams) -> Option<HoltFit> {
    let (&first, rest) = series.split_first()?;
    let &second = rest.first()?;
    let mut fit = HoltFit {
        level: first,
        trend: second - first,
    };
    for &y in rest {
        let previous_level = fit.level;
        fit.level = params.alpha * y + (1.0 - params.alpha) * (fit.level + fit.trend);
        fit.trend = params.beta * (fit.level - previous_level) + (1.0 - params.beta) * fit.trend;
    }
    Some(fit)
}

/// The least-squares slope over equally spaced points divided by its standard error: how
/// many standard errors the rise is away from "flat". A perfectly straight rising series
/// gives infinity, a perfectly flat one 0. `None` below three points.
pub fn slope_t_statistic(series: &[f64]) -> Option<f64> {
    let n = series.len();
    if n < 3 {
        return None;
    }
    let count = n as f64;
    let x_mean = (count - 1.0) / 2.0;
    let y_mean = series.iter().sum::<f64>() / count;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (i, &y) in series.iter().enumerate() {
        let dx = i as f64 - x_mean;
        let dy = y - y_mean;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    let slope = sxy / sxx;
    let residual = (syy - slope * sxy).max(0.0);
    // Rounding leaves a residual of a few ulps on a straight line; treat that as none.
    if residual <= syy * 1e-12 {
        return Some(if slope > 0.0 {
            f64::INFINITY
        } else if slope < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        });
    }
    let standard_error = (residual / (count - 2.0) / sxx).sqrt();
    Some(slope / standard_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holt_follows_a_straight_line_exactly() {
        let series: Vec<f64> = (0..20).map(|i| 100.0 + 7.0 * i as f64).collect();
        let fit = holt_linear(&series, HoltParams::default()).unwrap();
        assert!((fit.level - 233.0).abs() < 1e-9, "{fit:?}");
        assert!((fit.trend - 7.0).abs() < 1e-9, "{fit:?}");
        assert_eq!(fit.steps_to_reach(303.0), Some(10.0));
        assert_eq!(fit.steps_to_reach(200.0), Some(0.0));
    }

    #[test]
    fn holt_needs_two_points_and_a_rising_trend_to_reach() {
        assert_eq!(holt_linear(&[5.0], HoltParams::default()), None);
        let flat = holt_linear(&[5.0; 12], HoltParams::default()).unwrap();
        assert_eq!(flat.trend, 0.0);
        assert_eq!(flat.steps_to_reach(10.0), None);
    }

    #[test]
    fn slope_t_separates_rise_from_flat() {
        let rising: Vec<f64> = (0..30).map(|i| i as f64).collect();
        assert_eq!(slope_t_statistic(&rising), Some(f64::INFINITY));
        assert_eq!(slope_t_statistic(&[3.0; 30]), Some(0.0));
        let zigzag: Vec<f64> = (0..30)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let t = slope_t_statistic(&zigzag).unwrap();
        assert!(t.abs() < 1.0, "{t}");
        assert_eq!(slope_t_statistic(&[1.0, 2.0]), None);
    }
}
