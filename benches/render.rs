//! Rendering a full frame with 131 agent containers, at the grid size and at 80x24.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sutazai_top::tui::{self, App, Pane};

fn render_frames(c: &mut Criterion) {
    let snap = common::with_containers(131);
    let app = App {
        focus: Pane::Containers,
        ..App::default()
    };
    for (width, height) in [(200u16, 50u16), (80, 24)] {
        // The test backend cannot fail (its error type is uninhabited).
        let Ok(mut terminal) = Terminal::new(TestBackend::new(width, height));
        c.bench_function(&format!("draw_131_containers_{width}x{height}"), |b| {
            b.iter(|| {
                let drawn = terminal.draw(|frame| tui::draw(frame, black_box(&snap), &app));
                black_box(drawn.is_ok())
            })
        });
    }
}

criterion_group!(benches, render_frames);
criterion_main!(benches);
