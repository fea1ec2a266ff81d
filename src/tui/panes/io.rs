//! Disks and network: per-device rates for the last interval. Disks first, then network
//! interfaces; when both lists do not fit, each gets its share and says how many are hidden.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::table::{TextCell, join_cells};
use super::{fmt_count, short_bytes, zero_is_good};
use crate::model::{DiskStat, NetStat, Snapshot};
use crate::tui::theme;

/// Width of every number column.
const NUMBER_WIDTH: u16 = 8;
/// Device names wider than this are cut, so a disk row still fits 80 columns.
const NAME_MAX: usize = 14;
const NAME_MIN: usize = 6;

pub fn render(frame: &mut Frame, area: Rect, snap: &Snapshot, focused: bool) {
    let block = super::pane_block(Line::from(" Disks & network "), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = usize::from(inner.height);
    let (disk_rows, net_rows) = share_rows(snap.disks.len(), snap.nets.len(), height);
    let name_width = name_width(snap) as u16;
    let mut lines = disk_lines(&snap.disks, disk_rows, name_width);
    lines.extend(net_lines(&snap.nets, net_rows, name_width));
    frame.render_widget(Paragraph::new(lines), inner);
}

/// How many rows each list may use under its header line (at least one each, for a row or
/// the "none" text). Disks get their share first; network gets the rest.
fn share_rows(disks: usize, nets: usize, height: usize) -> (usize, usize) {
    let body = height.saturating_sub(2);
    let (want_disks, want_nets) = (disks.max(1), nets.max(1));
    if want_disks + want_nets <= body {
        return (want_disks, want_nets);
    }
    let disk_rows = want_disks.min((body / 2).max(1));
    let net_rows = want_nets.min(body.saturating_sub(disk_rows).max(1));
    let disk_rows = want_disks.min(body.saturating_sub(net_rows).max(1));
    (disk_rows, net_rows)
}

fn name_width(snap: &Snapshot) -> usize {
    let disk_names = snap.disks.iter().map(|d| d.name.chars().count());
    let net_names = snap.nets.iter().map(|n| n.name.chars().count());
    disk_names
        .chain(net_names)
        .max()
        .unwrap_or(0)
        .clamp(NAME_MIN, NAME_MAX)
}

fn header(name: &str, titles: &[&str], name_width: u16) -> Line<'static> {
    let style = theme::table_header();
    let name_cell = std::iter::once((TextCell::left(name.to_string(), style), name_width));
    let number_cells = titles
        .iter()
        .map(|title| (TextCell::right(title.to_string(), style), NUMBER_WIDTH));
    join_cells(name_cell.chain(number_cells))
}

fn row(name: &str, numbers: Vec<(String, Style)>, name_width: u16) -> Line<'static> {
    let name_cell = std::iter::once((TextCell::left(name.to_string(), Style::new()), name_width));
    let number_cells = numbers
        .into_iter()
        .map(|(text, style)| (TextCell::right(text, style), NUMBER_WIDTH));
    join_cells(name_cell.chain(number_cells))
}

/// `rows` lines of `items`; when some do not fit, the last line says how many are hidden.
fn rows_with_overflow<T>(
    items: &[T],
    rows: usize,
    what: &str,
    line: impl Fn(&T) -> Line<'static>,
) -> Vec<Line<'static>> {
    let shown = if items.len() > rows {
        rows.saturating_sub(1)
    } else {
        items.len()
    };
    let mut lines: Vec<Line<'static>> = items.iter().take(shown).map(line).collect();
    if shown < items.len() {
        lines.push(Line::styled(
            format!("… {} more {what}", items.len() - shown),
            theme::dim(),
        ));
    }
    lines
}

fn disk_lines(disks: &[DiskStat], rows: usize, name_width: u16) -> Vec<Line<'static>> {
    let titles = [
        "r/s", "w/s", "READ/s", "WRITE/s", "UTIL%", "QUEUE", "AWAIT ms",
    ];
    let mut lines = vec![header("DISK", &titles, name_width)];
    if disks.is_empty() {
        lines.push(Line::styled("no disk data yet", theme::dim()));
        return lines;
    }
    lines.extend(rows_with_overflow(disks, rows, "disks", |d| {
        let plain = Style::new();
        row(
            &d.name,
            vec![
                (fmt_count(d.reads_per_sec), plain),
                (fmt_count(d.writes_per_sec), plain),
                (short_bytes(d.read_bytes_per_sec), plain),
                (short_bytes(d.write_bytes_per_sec), plain),
                (format!("{:.1}", d.util_pct), theme::load(d.util_pct)),
                (format!("{:.2}", d.queue_depth), plain),
                (format!("{:.1}", d.await_ms), plain),
            ],
            name_width,
        )
    }));
    lines
}

fn net_lines(nets: &[NetStat], rows: usize, name_width: u16) -> Vec<Line<'static>> {
    let titles = ["RX/s", "TX/s", "PKT rx/s", "PKT tx/s", "ERR+DROP"];
    let mut lines = vec![header("NET", &titles, name_width)];
    if nets.is_empty() {
        lines.push(Line::styled("no network data yet", theme::dim()));
        return lines;
    }
    lines.extend(rows_with_overflow(nets, rows, "interfaces", |n| {
        let plain = Style::new();
        row(
            &n.name,
            vec![
                (short_bytes(n.rx_bytes_per_sec), plain),
                (short_bytes(n.tx_bytes_per_sec), plain),
                (fmt_count(n.rx_packets_per_sec), plain),
                (fmt_count(n.tx_packets_per_sec), plain),
                (fmt_count(n.errors_per_sec), zero_is_good(n.errors_per_sec)),
            ],
            name_width,
        )
    }));
    lines
}

#[cfg(test)]
mod tests {
    use super::share_rows;

    #[test]
    fn both_lists_get_rows_when_space_is_short() {
        assert_eq!(share_rows(3, 2, 10), (3, 2), "everything fits");
        assert_eq!(share_rows(0, 0, 10), (1, 1), "room for the 'none' lines");
        assert_eq!(share_rows(20, 20, 10), (4, 4));
        assert_eq!(share_rows(20, 2, 10), (6, 2), "network needs only two");
        assert_eq!(share_rows(2, 20, 10), (2, 6));
    }
}
