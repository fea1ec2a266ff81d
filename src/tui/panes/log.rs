//! The log pane: one line of sampler health (the tool's own cost, and any sampler that is
//! failing), then recent tracing events, captured by tui-logger's tracing layer (installed
//! by `tui::init_logging`).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerWidget};

use crate::model::{SamplerHealth, Snapshot};
use crate::tui::theme;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = super::pane_block(Line::from(" Log "), focused);
    let mut inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let strip = Rect { height: 1, ..inner };
    inner.y += 1;
    inner.height -= 1;
    frame.render_widget(
        Paragraph::new(sampler_line(&snap.samplers, strip.width)),
        strip,
    );
    let widget = TuiLoggerWidget::default()
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".to_string()))
        .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
        .output_target(true)
        .output_file(false)
        .output_line(false)
        .style_error(theme::error())
        .style_warn(theme::warning())
        .style_debug(theme::dim())
        .style_trace(theme::dim());
    frame.render_widget(widget, inner);
}

/// "samplers: disks ✗ permission denied 1.2ms · cpu 0.4ms · …": what each sampler's last
/// round cost in CPU time, failing ones first with their error in red. One line of at most
/// `width` cells: samplers that do not fit are counted ("+2 more"), never cut mid-name.
pub fn sampler_line(samplers: &[SamplerHealth], width: u16) -> Line<'static> {
    let width = usize::from(width);
    let mut spans = vec![Span::styled("samplers: ", theme::label())];
    if samplers.is_empty() {
        spans.push(Span::styled("none reported yet", theme::dim()));
        return Line::from(spans);
    }
    // Failing samplers first, so a narrow terminal drops the healthy ones, not the error.
    let failing = samplers.iter().filter(|s| s.last_error.is_some());
    let healthy = samplers.iter().filter(|s| s.last_error.is_none());
    let ordered: Vec<&SamplerHealth> = failing.chain(healthy).collect();
    let mut used = Line::from(spans.clone()).width();
    for (i, sampler) in ordered.iter().enumerate() {
        let mut entry = Vec::new();
        if i > 0 {
            entry.push(Span::styled(" · ", theme::dim()));
        }
        entry.extend(sampler_spans(sampler));
        let entry_width = Line::from(entry.clone()).width();
        let left_after = ordered.len() - i - 1;
        // Room for this entry, plus the "+N more" note if any would still be left out.
        let note_width = if left_after > 0 { MORE_NOTE_WIDTH } else { 0 };
        let fits = used + entry_width + note_width <= width;
        // The first entry always shows (clipped if it must): an error must never vanish.
        if !fits && i > 0 {
            spans.push(Span::styled(
                format!(" +{} more", ordered.len() - i),
                theme::dim(),
            ));
            break;
        }
        used += entry_width;
        spans.extend(entry);
    }
    Line::from(spans)
}

/// Width kept free for " +NN more".
const MORE_NOTE_WIDTH: usize = 9;

fn sampler_spans(sampler: &SamplerHealth) -> Vec<Span<'static>> {
    let mut spans = vec![Span::raw(format!("{} ", sampler.name))];
    if let Some(error) = &sampler.last_error {
        spans.push(Span::styled(format!("✗ {error} "), theme::error()));
    }
    spans.push(Span::styled(cpu_ms(sampler.last_cpu_us), theme::dim()));
    spans
}

/// CPU time in milliseconds, with a decimal while it is small.
fn cpu_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_sampler_shows_its_error_in_red() {
        let samplers = vec![
            SamplerHealth {
                name: "cpu".into(),
                last_cpu_us: 420,
                ..SamplerHealth::default()
            },
            SamplerHealth {
                name: "disks".into(),
                last_cpu_us: 12_600,
                last_error: Some("permission denied".into()),
                ..SamplerHealth::default()
            },
        ];
        let line = sampler_line(&samplers, 80);
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(text, "samplers: disks ✗ permission denied 13ms · cpu 0.4ms");
        let error = line
            .spans
            .iter()
            .find(|s| s.content.contains("permission denied"))
            .map(|s| s.style);
        assert_eq!(error, Some(theme::error()));
    }

    #[test]
    fn samplers_that_do_not_fit_are_counted_not_cut() {
        let samplers: Vec<SamplerHealth> = ["cpu", "memory", "pressure", "containers"]
            .iter()
            .map(|name| SamplerHealth {
                name: (*name).into(),
                last_cpu_us: 1_000,
                ..SamplerHealth::default()
            })
            .collect();
        let text = |width| -> String {
            sampler_line(&samplers, width)
                .spans
                .iter()
                .map(|s| s.content.to_string())
                .collect()
        };
        assert_eq!(text(45), "samplers: cpu 1.0ms · memory 1.0ms +2 more");
        assert_eq!(
            text(80),
            "samplers: cpu 1.0ms · memory 1.0ms · pressure 1.0ms · containers 1.0ms"
        );
    }
}
