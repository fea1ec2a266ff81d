//! TUI frames rendered into ratatui's TestBackend: insta snapshots of every pane in every
//! state at 80x24 and 200x50, cell-level style checks, and the pure key handler.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use sutazai_top::engine::Command;
use sutazai_top::model::Mode;
use sutazai_top::model::Snapshot;
use sutazai_top::tui::keymap::BINDINGS;
use sutazai_top::tui::{self, App, Pane, SortKey, theme};

const SMALL: (u16, u16) = (80, 24);
const LARGE: (u16, u16) = (200, 50);
/// Wide, but under the grid's threshold: one pane at a time, long lines whole.
const WIDE_TAB: (u16, u16) = (150, 30);

fn render(snap: &Snapshot, app: &App, (width, height): (u16, u16)) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    terminal
        .draw(|frame| tui::draw(frame, snap, app))
        .expect("draw into test backend");
    terminal.backend().buffer().clone()
}

/// The buffer as text, one line per row, trailing blanks trimmed.
fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let row: String = (0..area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            row.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn row_text(buffer: &Buffer, y: u16) -> String {
    (0..buffer.area.width)
        .map(|x| buffer[(x, y)].symbol().to_string())
        .collect()
}

fn focused(pane: Pane) -> App {
    App {
        focus: pane,
        ..App::default()
    }
}

fn press(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ch(c: char) -> KeyEvent {
    press(KeyCode::Char(c))
}

fn states() -> Vec<(&'static str, Snapshot)> {
    vec![
        ("empty", common::empty()),
        ("unreachable", common::docker_unreachable()),
        ("containers131", common::with_containers(131)),
        ("numa64", common::numa64()),
    ]
}

/// The pane's title as a file-name part: "I/O" becomes "io".
fn slug(pane: Pane) -> String {
    pane.title().to_lowercase().replace('/', "")
}

fn size_name((w, h): (u16, u16)) -> String {
    format!("{w}x{h}")
}

#[test]
fn every_pane_in_every_state_and_size() {
    for (state, snap) in states() {
        for pane in Pane::ALL {
            for size in [SMALL, LARGE] {
                let name = format!("{state}_{}_{}", slug(pane), size_name(size));
                insta::assert_snapshot!(name, text(&render(&snap, &focused(pane), size)));
            }
        }
    }
}

#[test]
fn each_mode_in_the_header() {
    for mode in [Mode::Conservative, Mode::Balanced, Mode::Aggressive] {
        let mut snap = common::small_host();
        snap.mode = mode;
        let buffer = render(&snap, &App::default(), SMALL);
        let header = row_text(&buffer, 1);
        assert!(header.contains(&mode.label().to_uppercase()), "{header}");
        insta::assert_snapshot!(format!("mode_{}", mode.label()), text(&buffer));
    }
}

#[test]
fn notices_and_read_only_show_in_the_header() {
    let mut snap = common::with_notice(
        common::small_host(),
        "report written to /var/lib/sutazai-top/report-42.json",
        false,
    );
    snap.host.is_root = false;
    let buffer = render(&snap, &App::default(), SMALL);
    assert!(row_text(&buffer, 0).contains("READ-ONLY (not root)"));
    assert!(row_text(&buffer, 1).contains("report written to /var/lib"));
    insta::assert_snapshot!("notice_read_only", text(&buffer));

    let snap = common::with_notice(common::small_host(), "export failed: disk full", true);
    let buffer = render(&snap, &App::default(), SMALL);
    let row = row_text(&buffer, 1);
    let x = row.find("export failed").expect("notice shown") as u16;
    // Byte offset equals column here only if everything before is one byte wide per cell.
    let x = row[..x as usize].chars().count() as u16;
    assert_eq!(buffer[(x, 1)].fg, theme::HOT, "errors are red");
}

#[test]
fn help_overlay_lists_every_binding() {
    let app = App {
        help_visible: true,
        ..App::default()
    };
    for size in [SMALL, LARGE] {
        let buffer = render(&common::small_host(), &app, size);
        let shown = text(&buffer);
        for binding in BINDINGS {
            assert!(
                shown.contains(&binding.keys_label()) && shown.contains(binding.description),
                "help at {} lacks {:?}: {}",
                size_name(size),
                binding.keys_label(),
                binding.description
            );
        }
        insta::assert_snapshot!(format!("help_{}", size_name(size)), shown);
    }
}

#[test]
fn filter_shows_only_matching_containers() {
    let mut snap = common::with_containers(131);
    // Processes in agent cgroups name their agent too; count the container table alone.
    snap.processes.clear();
    let mut app = App::default();
    for key in "/agent-01".chars().map(ch) {
        assert_eq!(app.handle_key(key, &snap), None);
    }
    assert_eq!(app.focus, Pane::Containers);
    assert_eq!(app.filter, "agent-01");
    for size in [SMALL, LARGE] {
        let buffer = render(&snap, &app, size);
        let shown = text(&buffer);
        let listed = (0..131)
            .filter(|i| shown.contains(&format!("agent-{i:03}")))
            .count();
        assert_eq!(listed, 10, "agent-010..agent-019 only");
        assert!(shown.contains("agent-019") && !shown.contains("agent-020"));
        insta::assert_snapshot!(format!("filter_agent01_{}", size_name(size)), shown);
    }
}

#[test]
fn filter_without_match_says_so() {
    let snap = common::with_containers(131);
    let app = App {
        focus: Pane::Containers,
        filter: "no-such".into(),
        ..App::default()
    };
    let shown = text(&render(&snap, &app, SMALL));
    assert!(
        shown.contains("No agent container matches \"no-such\""),
        "{shown}"
    );
}

#[test]
fn sorted_by_memory_puts_the_largest_first() {
    let snap = common::with_containers(131);
    let mut app = focused(Pane::Containers);
    app.handle_key(ch('s'), &snap);
    assert_eq!(app.sort, SortKey::Memory);
    for size in [SMALL, LARGE] {
        let shown = text(&render(&snap, &app, size));
        // 1088 MiB (i % 17 == 16) is the most; ties go by name.
        let first = shown.find("agent-016").expect("largest shown");
        let second = shown.find("agent-033").expect("next largest shown");
        assert!(first < second);
        assert!(shown.contains("MEM/LIMIT▼"));
        insta::assert_snapshot!(format!("sorted_memory_{}", size_name(size)), shown);
    }
}

#[test]
fn docker_states_explain_themselves() {
    let shown = text(&render(
        &common::docker_unreachable(),
        &focused(Pane::Containers),
        SMALL,
    ));
    for expected in [
        "Docker is not reachable",
        "unix:///var/run/docker.sock",
        "connection refused (os error 111)",
        "in 5 s",
        "Everything else still works",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in\n{shown}");
    }
    let shown = text(&render(
        &common::small_host(),
        &focused(Pane::Containers),
        SMALL,
    ));
    assert!(
        shown.contains("No agent containers (label sutazai.agent)"),
        "{shown}"
    );
    assert!(shown.contains("reports 4 containers"), "{shown}");
    let shown = text(&render(&common::empty(), &focused(Pane::Containers), SMALL));
    assert!(shown.contains("Connecting to Docker"), "{shown}");
}

#[test]
fn pools_not_served_show_why_and_no_numbers() {
    let mut snap = common::numa64();
    snap.pools.not_serving = Some("[object_store] enabled = false".into());
    let buffer = render(&snap, &focused(Pane::Pools), SMALL);
    // The body: below the header and tab bar, above the summary line.
    let body: String = (3..23).map(|y| row_text(&buffer, y)).collect();
    assert!(
        body.contains("Memory pools not served: [object_store] enabled = false"),
        "{body}"
    );
    snap.pools.not_serving = None;
    let buffer = render(&snap, &focused(Pane::Pools), SMALL);
    let body: String = (3..23).map(|y| row_text(&buffer, y)).collect();
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    assert!(digits.is_empty(), "the pools pane shows numbers: {digits}");
}

#[test]
fn the_pools_pane_shows_each_pool_and_what_sharing_saves_each_agent() {
    use sutazai_pools::{AgentUse, PoolSnapshot, PoolsSnapshot};
    const MIB: u64 = 1 << 20;
    let mut snap = common::numa64();
    let agent = |name: &str, saved| AgentUse {
        agent: name.into(),
        pool: "default".into(),
        objects: 1,
        held_bytes: 256 * MIB,
        saved_bytes: saved,
        ..AgentUse::default()
    };
    snap.pools.serving = Some(PoolsSnapshot {
        socket: "/run/sutazai-top/pools.sock".into(),
        clients: 8,
        pools: vec![PoolSnapshot {
            name: "default".into(),
            compression: "lz4".into(),
            capacity_bytes: 4096 * MIB,
            used_bytes: 256 * MIB,
            objects: 1,
            physical_bytes: 256 * MIB,
            logical_bytes: 2048 * MIB,
            evictions: 3,
            refused: 2,
            ..PoolSnapshot::default()
        }],
        agents: vec![agent("embedder-1", 224 * MIB), agent("llm-7", 224 * MIB)],
    });
    // An agent outside the pools whose memory KSM merges.
    snap.containers
        .agents
        .push(sutazai_top::model::ContainerStat {
            name: "ksm-agent".into(),
            ksm: Some(sutazai_top::model::AgentKsm {
                merging_pages: 16384,
                merging_bytes: 64 * MIB,
                profit_bytes: 60 * MIB as i64,
                merge_any: true,
                ..Default::default()
            }),
            ..Default::default()
        });
    let buffer = render(&snap, &focused(Pane::Pools), SMALL);
    let rows: Vec<String> = (3..23).map(|y| row_text(&buffer, y)).collect();
    let body = rows.join("\n");
    assert!(
        body.contains("/run/sutazai-top/pools.sock · 8 clients"),
        "{body}"
    );
    let ksm = rows.iter().find(|r| r.contains("ksm-agent")).expect(&body);
    assert!(
        ksm.contains("64M") && ksm.contains("60M") && ksm.contains("whole process"),
        "{ksm}"
    );
    let pool = rows
        .iter()
        .find(|r| r.starts_with("│default"))
        .expect(&body);
    assert!(pool.contains("256M/4.0G"), "{pool}");
    assert!(pool.contains("8.00x"), "dedup ratio: {pool}");
    let llm = rows.iter().find(|r| r.contains("llm-7")).expect(&body);
    assert!(
        llm.contains("256M") && llm.contains("224M"),
        "held and saved: {llm}"
    );
    // Refusals stand out.
    let y = 3 + rows.iter().position(|r| r.starts_with("│default")).unwrap() as u16;
    let refused_x = (0..80)
        .rev()
        .find(|&x| buffer[(x, y)].symbol() == "2")
        .unwrap();
    assert_eq!(
        buffer[(refused_x, y)].style().fg,
        sutazai_top::tui::theme::warning().fg
    );
}

/// The cache pane's body (below the header and tab bar, above the summary line) at 80x24.
fn cache_body(snap: &Snapshot) -> String {
    let buffer = render(snap, &focused(Pane::Cache), SMALL);
    (3..23)
        .map(|y| row_text(&buffer, y).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_cache_that_is_off_says_so_and_shows_no_numbers() {
    let body = cache_body(&common::numa64());
    assert!(
        body.contains("Cache off ([cache] enabled = false)"),
        "{body}"
    );
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    assert!(digits.is_empty(), "shows numbers: {digits}\n{body}");
    let grid = text(&render(&common::numa64(), &App::default(), LARGE));
    assert!(grid.contains("off ([cache] enabled = false)"), "{grid}");
}

#[test]
fn the_cache_pane_shows_each_level_prefetch_and_policies() {
    let snap = common::with_cache(common::numa64());
    let body = cache_body(&snap);
    for expected in [
        "Hit ratio 80.0% of 1000 gets · 500 puts · 3 refused",
        "Used/capacity",
        "L1      128M/256M ████░░░░     2000    60%    1000     300 adaptive→w-tinylfu",
        "L2      256M/1.0G ██░░░░░░     5000    25%    2500      50 adaptive→w-tinylfu",
        "L3      3.0G/4.0G ██████░░     9000    25%    4500      50 lru",
        "l3 disabled: /var/lib/sutazai-top/cache: write failed: No space left on device",
        "l3: 2 damaged entries dropped",
        "Prefetch accuracy 62.5% (50 used of 80 prefetched, depth 3)",
        "Agents agent-01 83.3% of 600 · agent-02 83.3% of 300 · agent-03 50.0% of 100",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    // The sparkline of the hit-ratio history follows the total.
    let total = body
        .lines()
        .find(|l| l.contains("Hit ratio"))
        .unwrap_or_default();
    assert!(total.chars().any(|c| ('▁'..='█').contains(&c)), "{total}");
    insta::assert_snapshot!("cache_working_80x24", body);
    let wide = text(&render(&snap, &focused(Pane::Cache), LARGE));
    assert!(
        wide.contains("hit 80.0% · l1 128M · l2 256M · l3 3.0G off!"),
        "{wide}"
    );
    insta::assert_snapshot!("cache_working_200x50", wide);
}

#[test]
fn a_fresh_cache_shows_no_invented_ratios() {
    let body = cache_body(&common::with_fresh_cache(common::numa64()));
    for expected in [
        "Hit ratio – no gets yet",
        "L2  off (l2_bytes = 0)",
        "Prefetch no prefetch yet",
        "Agents none yet",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    let l1 = body
        .lines()
        .find(|l| l.starts_with("│L1"))
        .unwrap_or_default();
    assert!(
        l1.contains(" – ") && !l1.contains('%'),
        "no hit ratio before a lookup: {l1}"
    );
    insta::assert_snapshot!("cache_fresh_80x24", body);
}

/// The balancer pane's body (below the header and tab bar, above the summary line) at 80x24.
fn balancer_body(snap: &Snapshot) -> String {
    let buffer = render(snap, &focused(Pane::Balancer), SMALL);
    (3..23)
        .map(|y| row_text(&buffer, y).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_balancer_that_is_off_says_so_how_to_enable_it_and_shows_no_numbers() {
    let body = balancer_body(&common::numa64());
    assert!(body.contains("Balancer off"), "{body}");
    assert!(body.contains("[balancer] enabled = true"), "{body}");
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    assert!(digits.is_empty(), "shows numbers: {digits}\n{body}");
    let grid = text(&render(&common::numa64(), &App::default(), LARGE));
    assert!(
        grid.contains("off (set [balancer] enabled = true)"),
        "{grid}"
    );
}

#[test]
fn the_balancer_pane_shows_each_pool_and_backend() {
    let snap = common::with_balancer(common::numa64());
    let body = balancer_body(&snap);
    for expected in [
        "Listen 127.0.0.1:8080 · 1286 req/s · 1.2M requests",
        "Queued 3 · 503s 17 · retries 40 (2 over budget) · bad requests 5",
        "Pool default · peak-ewma · 2/3 up · rule: default",
        // Too long for 78 cells: the rule, last, is cut; panic-mode choices are shown.
        "Pool compute · least-connections · 2/2 up · panic mode 3 · rule: header x-req…",
        "127.0.0.1:18081 up      closed       3/100    420  1.2ms  8.5ms      2      0",
        "10.0.0.7:8000   ejected open         0/100      0      –      –     57  2/45s",
        "127.0.0.1:19001 up      closed       12/16   35.2  120ms  850ms      1      0",
        "127.0.0.1:19002 up      half-open     1/16    0.4 95.0ms 95.0ms      9      1",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    for line in body.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line}");
    }
    insta::assert_snapshot!("balancer_working_80x24", body);

    // Wide, one pane at a time: every column, the source and EWMA included, the rule whole.
    let wide = text(&render(&snap, &focused(Pane::Balancer), WIDE_TAB));
    for expected in [
        "Listen 127.0.0.1:8080 · 1286 req/s · 1.2M requests · Queued 3 · 503s 17",
        "rule: header x-request-type: compute",
        "Source",
        "docker:agent-007",
        "EWMA",
        "250ms",
    ] {
        assert!(wide.contains(expected), "missing {expected:?} in\n{wide}");
    }
    insta::assert_snapshot!("balancer_working_150x30", wide);

    // The grid's compact row: the whole proxy in one line.
    let grid = text(&render(&snap, &focused(Pane::Balancer), LARGE));
    assert!(
        grid.contains("1286 req/s · 4/5 up · 1 ejected · 3 queued"),
        "{grid}"
    );
    insta::assert_snapshot!("balancer_working_200x50", grid);
}

#[test]
fn a_balancer_cell_is_coloured_by_its_state() {
    let snap = common::with_balancer(common::numa64());
    let buffer = render(&snap, &focused(Pane::Balancer), SMALL);
    let find = |needle: &str| -> (u16, u16) {
        for y in 0..buffer.area.height {
            if let Some(at) = row_text(&buffer, y).find(needle) {
                let x = row_text(&buffer, y)[..at].chars().count() as u16;
                return (x, y);
            }
        }
        panic!("{needle} not shown");
    };
    let (x, y) = find("half-open");
    assert_eq!(buffer[(x, y)].fg, theme::warning().fg.unwrap());
    let (x, y) = find("ejected open");
    assert_eq!(buffer[(x, y)].fg, theme::warning().fg.unwrap());
    assert_eq!(buffer[(x + 8, y)].fg, theme::error().fg.unwrap());
}

#[test]
fn a_balancer_with_more_backends_than_rows_says_how_many_are_hidden() {
    let mut snap = common::with_balancer(common::numa64());
    let balancer = snap.balancer.as_mut().unwrap();
    balancer.docker_skipped.clear();
    let template = balancer.pools[0].backends[0].clone();
    balancer.pools[0].backends = (0..30)
        .map(|i| sutazai_balancer::BackendSnapshot {
            id: format!("127.0.0.1:{}", 20_000 + i),
            ..template.clone()
        })
        .collect();
    let body = balancer_body(&snap);
    // 18 rows: two header lines, pool line, column header, 13 backends, the note; the
    // 17 backends of default that do not fit and both of compute are hidden.
    assert!(
        body.contains("… 19 more backends (a taller terminal shows them)"),
        "{body}"
    );
    assert!(body.contains("127.0.0.1:20012"), "{body}");
    assert!(!body.contains("127.0.0.1:20013"), "{body}");
}

#[test]
fn proposals_say_what_is_not_built_and_show_the_journal_truthfully() {
    let snap = common::numa64();
    let shown = text(&render(&snap, &focused(Pane::Proposals), SMALL));
    assert!(shown.contains("No bottleneck held"), "{shown}");
    assert!(shown.contains("nothing proposed"), "{shown}");

    // A bottleneck with no fix (a busy host, no agent to act on) is named, not denied.
    let mut snap = common::with_proposal(common::numa64(), sutazai_top::model::Risk::Low);
    snap.proposals.clear();
    let shown = text(&render(&snap, &focused(Pane::Proposals), SMALL));
    assert!(!shown.contains("No bottleneck held"), "{shown}");
    assert!(
        shown.contains("1 bottleneck held (noisy_neighbour on agent-001), no fix for it"),
        "{shown}"
    );

    // A plan restates what it keeps: "stays 0", not "0 -> 0".
    let mut snap = common::with_proposal(common::numa64(), sutazai_top::model::Risk::Low);
    let intent = &mut snap.proposals[0].fix.intents[0];
    intent.expected_before = intent.after.clone();
    let shown = text(&render(&snap, &focused(Pane::Proposals), LARGE));
    assert!(shown.contains("ContainerCpuShares stays 256"), "{shown}");
    assert!(!shown.contains("256 -> 256"), "{shown}");

    let snap = common::with_active_changes(common::numa64());
    let shown = text(&render(&snap, &focused(Pane::Proposals), SMALL));
    assert!(shown.contains("2 active"), "{shown}");
    assert!(
        shown.contains("#3") && shown.contains("4/4 applied") && shown.contains("1m"),
        "{shown}"
    );
    assert!(
        shown.contains("#7") && shown.contains("HALF APPLIED") && shown.contains("2h"),
        "{shown}"
    );
    insta::assert_snapshot!("proposals_active_80x24", shown);
    let wide = text(&render(&snap, &focused(Pane::Proposals), LARGE));
    assert!(wide.contains("2 active · 1 half applied"), "{wide}");
}

#[test]
fn a_proposal_shows_risk_evidence_and_exact_changes_and_a_applies_it() {
    use sutazai_top::model::Risk;
    let snap = common::with_proposal(common::with_containers(131), Risk::Low);
    let mut app = focused(Pane::Proposals);
    let shown = text(&render(&snap, &app, SMALL));
    assert!(shown.contains("1 bottlenecks · 1 proposed"), "{shown}");
    assert!(
        shown.contains("P4") && shown.contains("proposed") && shown.contains("low"),
        "{shown}"
    );
    assert!(
        shown.contains("agent-001 cpu 96.5% (threshold 50.0)"),
        "{shown}"
    );
    assert!(
        shown.contains("agent-001 ContainerCpuShares 1024 -> 256"),
        "{shown}"
    );
    assert!(
        shown.contains("should improve: host PSI cpu some avg10"),
        "{shown}"
    );
    insta::assert_snapshot!("proposal_selected_80x24", shown);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('a')), &snap),
        Some(Command::Apply(4))
    );
    assert_eq!(
        app.handle_key(press(KeyCode::Char('d')), &snap),
        Some(Command::Dismiss(4))
    );
    // Nothing to roll back on a proposal that is not applied.
    assert_eq!(app.handle_key(press(KeyCode::Char('r')), &snap), None);
}

#[test]
fn the_header_says_when_auto_fix_is_on() {
    let mut snap = common::small_host();
    assert!(!text(&render(&snap, &focused(Pane::Cores), SMALL)).contains("AUTO-FIX"));
    snap.auto_fix = true;
    let shown = text(&render(&snap, &focused(Pane::Cores), SMALL));
    assert!(shown.contains("CONSERVATIVE +AUTO-FIX"), "{shown}");
}

#[test]
fn a_high_risk_proposal_needs_a_second_a() {
    use sutazai_top::model::Risk;
    let snap = common::with_proposal(common::numa64(), Risk::High);
    let mut app = focused(Pane::Proposals);
    assert_eq!(app.handle_key(press(KeyCode::Char('a')), &snap), None);
    let shown = text(&render(&snap, &app, SMALL));
    assert!(shown.contains("press a again"), "{shown}");
    assert_eq!(
        app.handle_key(press(KeyCode::Char('a')), &snap),
        Some(Command::Apply(4))
    );
    // Anywhere but the Proposals pane, a does nothing.
    let mut elsewhere = focused(Pane::Cores);
    assert_eq!(elsewhere.handle_key(press(KeyCode::Char('a')), &snap), None);
}

#[test]
fn r_rolls_back_the_selected_batch_only_in_the_proposals_pane() {
    let snap = common::with_active_changes(common::numa64());
    let mut app = focused(Pane::Proposals);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('r')), &snap),
        Some(Command::Rollback(3))
    );
    app.handle_key(press(KeyCode::Char('j')), &snap);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('r')), &snap),
        Some(Command::Rollback(7))
    );
    let mut elsewhere = focused(Pane::Containers);
    assert_eq!(elsewhere.handle_key(press(KeyCode::Char('r')), &snap), None);
    let mut nothing = focused(Pane::Proposals);
    assert_eq!(
        nothing.handle_key(press(KeyCode::Char('r')), &common::numa64()),
        None
    );
}

#[test]
fn focused_pane_border_uses_the_focus_style() {
    let snap = common::small_host();
    let buffer = render(&snap, &focused(Pane::Cores), SMALL);
    assert_eq!(buffer[(0, 3)].symbol(), "┌");
    assert_eq!(buffer[(0, 3)].fg, theme::FOCUS);

    // In the grid, Cores sits top-left; focusing Memory turns its border muted.
    let buffer = render(&snap, &focused(Pane::Cores), LARGE);
    assert_eq!(buffer[(0, 3)].fg, theme::FOCUS);
    let buffer = render(&snap, &focused(Pane::Memory), LARGE);
    assert_eq!(buffer[(0, 3)].fg, theme::MUTED);
    assert_eq!(buffer[(110, 3)].symbol(), "┌", "memory pane starts at 55 %");
    assert_eq!(buffer[(110, 3)].fg, theme::FOCUS);
}

#[test]
fn a_busy_cpu_bar_is_hot_and_an_idle_one_is_calm() {
    // small_host: CPU 0 at 95 %, CPU 1 at 20 %, side by side on one row.
    let buffer = render(&common::small_host(), &focused(Pane::Cores), SMALL);
    let y = (0..buffer.area.height)
        .find(|y| row_text(&buffer, *y).contains("  95"))
        .expect("the row of CPU 0");
    let bars: Vec<Color> = (0..buffer.area.width)
        .filter(|x| buffer[(*x, y)].symbol() == "█")
        .map(|x| buffer[(x, y)].fg)
        .collect();
    assert_eq!(bars.first(), Some(&theme::HOT));
    assert_eq!(bars.last(), Some(&theme::OK));
    assert!(bars.contains(&theme::OK) && bars.iter().filter(|c| **c == theme::HOT).count() > 3);
}

#[test]
fn numa64_marks_siblings_and_isolated_cpus() {
    for size in [SMALL, LARGE] {
        let shown = text(&render(&common::numa64(), &focused(Pane::Cores), size));
        assert!(shown.contains("node 0 · cpus 0-15,32-47"), "{shown}");
        assert!(shown.contains("node 1 · cpus 16-31,48-63"), "{shown}");
        assert!(shown.contains("28/60"), "siblings share a cell");
        assert!(
            shown.contains("31/63"),
            "every core shown at {}",
            size_name(size)
        );
        // Exactly CPUs 60-63 carry the isolated mark: an "i" right after their percent.
        let chars: Vec<char> = shown.chars().collect();
        let marks = chars
            .windows(2)
            .filter(|pair| pair[0].is_ascii_digit() && pair[1] == 'i')
            .count();
        assert_eq!(marks, 4, "{shown}");
    }
}

// ------------------------------------------------------------------------------------------
// The key handler
// ------------------------------------------------------------------------------------------

#[test]
fn mode_keys_ask_the_engine() {
    let snap = common::small_host();
    let mut app = App::default();
    assert_eq!(
        app.handle_key(ch('1'), &snap),
        Some(Command::SetMode(Mode::Conservative))
    );
    assert_eq!(
        app.handle_key(ch('2'), &snap),
        Some(Command::SetMode(Mode::Balanced))
    );
    assert_eq!(
        app.handle_key(ch('3'), &snap),
        Some(Command::SetMode(Mode::Aggressive))
    );
    assert_eq!(app.handle_key(ch('e'), &snap), Some(Command::ExportReport));
    assert_eq!(app.handle_key(ch('q'), &snap), Some(Command::Quit));
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.handle_key(ctrl_c, &snap), Some(Command::Quit));
}

#[test]
fn typing_a_filter_does_not_quit() {
    let snap = common::small_host();
    let mut app = App::default();
    assert_eq!(app.handle_key(ch('/'), &snap), None);
    assert!(app.filter_typing);
    assert_eq!(app.handle_key(ch('q'), &snap), None);
    assert_eq!(app.handle_key(ch('2'), &snap), None);
    assert_eq!(app.filter, "q2");
    app.handle_key(press(KeyCode::Esc), &snap);
    assert_eq!(app.filter, "");
    assert!(!app.filter_typing);
    assert_eq!(app.handle_key(ch('q'), &snap), Some(Command::Quit));
}

#[test]
fn s_cycles_the_sort() {
    let snap = common::small_host();
    let mut app = App::default();
    let mut seen = vec![app.sort];
    for _ in 0..4 {
        app.handle_key(ch('s'), &snap);
        seen.push(app.sort);
    }
    assert_eq!(
        seen,
        [
            SortKey::Cpu,
            SortKey::Memory,
            SortKey::Io,
            SortKey::Name,
            SortKey::Cpu
        ]
    );
}

#[test]
fn tab_cycles_focus_both_ways() {
    let snap = common::small_host();
    let mut app = App::default();
    let mut order = Vec::new();
    for _ in 0..Pane::ALL.len() {
        app.handle_key(press(KeyCode::Tab), &snap);
        order.push(app.focus);
    }
    assert_eq!(order.first(), Some(&Pane::Memory));
    assert_eq!(order.last(), Some(&Pane::Cores), "wraps around");
    app.handle_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT), &snap);
    assert_eq!(app.focus, Pane::Log);
}

#[test]
fn release_and_repeat_events_are_ignored() {
    let snap = common::small_host();
    let mut app = App::default();
    for kind in [KeyEventKind::Release, KeyEventKind::Repeat] {
        let key = KeyEvent::new_with_kind_and_state(
            KeyCode::Char('q'),
            KeyModifiers::NONE,
            kind,
            KeyEventState::NONE,
        );
        assert_eq!(app.handle_key(key, &snap), None);
        let tab = KeyEvent::new_with_kind(KeyCode::Tab, KeyModifiers::NONE, kind);
        app.handle_key(tab, &snap);
        assert_eq!(app.focus, Pane::Cores);
    }
}

#[test]
fn help_opens_and_escape_closes_it() {
    let snap = common::small_host();
    let mut app = App::default();
    app.handle_key(ch('?'), &snap);
    assert!(app.help_visible);
    app.handle_key(press(KeyCode::Esc), &snap);
    assert!(!app.help_visible);
    app.handle_key(press(KeyCode::F(1)), &snap);
    assert!(app.help_visible);
}

#[test]
fn arrows_move_the_container_selection() {
    let snap = common::with_containers(131);
    let mut app = focused(Pane::Containers);
    app.sort = SortKey::Name;
    app.handle_key(press(KeyCode::Down), &snap);
    app.handle_key(ch('j'), &snap);
    let selected = app.selected_container.clone();
    assert_eq!(selected, Some(common::container(2).id));
    app.handle_key(ch('k'), &snap);
    assert_eq!(app.selected_container, Some(common::container(1).id));
    let buffer = render(&snap, &app, SMALL);
    let y = (0..buffer.area.height)
        .find(|y| row_text(&buffer, *y).contains("agent-001"))
        .expect("selected row shown");
    assert_eq!(buffer[(2, y)].bg, theme::FOCUS, "selected row highlighted");
}

// ------------------------------------------------------------------------------------------
// Processes, disks and network, sampler health
// ------------------------------------------------------------------------------------------

#[test]
fn processes_pane_lists_the_busiest_with_scheduling_details() {
    let snap = common::small_host();
    let busiest = common::process(0);
    for size in [SMALL, LARGE] {
        let shown = text(&render(&snap, &focused(Pane::Processes), size));
        for column in [
            "PID", "COMM", "CPU%", "RSS", "THR", "POLICY", "CGROUP", "CMDLINE",
        ] {
            assert!(
                shown.contains(column),
                "{column} at {}:\n{shown}",
                size_name(size)
            );
        }
        assert!(
            shown.contains(&format!("{:>7} python3", busiest.id.pid)),
            "{shown}"
        );
        assert!(shown.contains("180.0"), "{shown}");
        assert!(
            shown.contains("[kworker/4:"),
            "kernel threads bracketed: {shown}"
        );
    }
    // Full width below the grid size: room for every column and most of the command line.
    let shown = text(&render(&snap, &focused(Pane::Processes), (170, 40)));
    for column in ["NICE", "CPUS"] {
        assert!(shown.contains(column), "{column}:\n{shown}");
    }
    assert!(shown.contains(" 0-1 ") && shown.contains("-10"), "{shown}");
    assert!(shown.contains("BATCH") && shown.contains("DL") && shown.contains("FIFO"));
    assert!(shown.contains("--model llama-3-8b-instruct"), "{shown}");
    assert!(shown.contains("[kworker/4:1]"), "{shown}");
    // A process in an agent's cgroup shows the agent's name; without the agent, the path
    // with Docker's short id.
    let short_id = common::container_id(0).chars().take(12).collect::<String>();
    assert!(shown.contains(&format!("/docker/{short_id} ")), "{shown}");
    let with_agents = text(&render(
        &common::with_containers(131),
        &focused(Pane::Processes),
        (170, 40),
    ));
    let first = with_agents
        .lines()
        .find(|l| l.contains(&format!("{:>7} python3", busiest.id.pid)))
        .expect("busiest row");
    assert!(first.contains(" agent-000 "), "{first}");
    // On a narrow pane cgroup paths are cut from the left: their end tells them apart.
    let narrow = text(&render(&snap, &focused(Pane::Processes), SMALL));
    assert!(narrow.contains(" …rker-01.service "), "{narrow}");
}

#[test]
fn processes_pane_says_when_there_is_nothing_yet() {
    for size in [SMALL, LARGE] {
        let shown = text(&render(&common::empty(), &focused(Pane::Processes), size));
        assert!(
            shown.contains("no process data yet (first tick)"),
            "{shown}"
        );
    }
}

#[test]
fn arrows_move_the_process_selection() {
    let snap = common::small_host();
    let mut app = focused(Pane::Processes);
    app.handle_key(press(KeyCode::Down), &snap);
    app.handle_key(ch('j'), &snap);
    app.handle_key(ch('k'), &snap);
    assert_eq!(app.selected_process, Some(common::process(1).id));
    app.handle_key(press(KeyCode::End), &snap);
    assert_eq!(app.selected_process, Some(common::process(39).id));
    let buffer = render(&snap, &app, SMALL);
    let pid = common::process(39).id.pid.to_string();
    let y = (0..buffer.area.height)
        .find(|y| row_text(&buffer, *y).contains(&pid))
        .expect("the last process scrolled into view");
    assert_eq!(buffer[(2, y)].bg, theme::FOCUS, "selected row highlighted");
    // Movement in another pane leaves the process selection alone.
    app.focus = Pane::Containers;
    app.handle_key(ch('g'), &snap);
    assert_eq!(app.selected_process, Some(common::process(39).id));
}

#[test]
fn io_pane_shows_disks_and_network() {
    for size in [SMALL, LARGE] {
        let shown = text(&render(&common::small_host(), &focused(Pane::Io), size));
        for expected in [
            "DISK",
            "UTIL%",
            "AWAIT ms",
            "nvme0n1",
            "sda",
            "NET",
            "RX/s",
            "eth0",
            "veth1a2b3c4",
            "8.0M",
            "12M",
            "92.0",
        ] {
            assert!(
                shown.contains(expected),
                "{expected} at {}:\n{shown}",
                size_name(size)
            );
        }
        let shown = text(&render(&common::empty(), &focused(Pane::Io), size));
        assert!(shown.contains("no disk data yet"), "{shown}");
        assert!(shown.contains("no network data yet"), "{shown}");
    }
}

#[test]
fn network_errors_and_a_busy_disk_are_red() {
    let buffer = render(&common::small_host(), &focused(Pane::Io), SMALL);
    let red_on = |needle: &str, value: &str| {
        let y = (0..buffer.area.height)
            .find(|y| row_text(&buffer, *y).contains(needle))
            .expect("row shown");
        let row = row_text(&buffer, y);
        let byte = row.rfind(value).expect("value shown");
        let x = row[..byte].chars().count() as u16;
        buffer[(x, y)].fg
    };
    assert_eq!(red_on("nvme0n1", "92.0"), theme::HOT, "92 % util is hot");
    assert_eq!(red_on("eth0", "2"), theme::HOT, "errors are red");
}

#[test]
fn a_failing_sampler_shows_in_red_in_the_log_pane() {
    let snap = common::with_sampler_error(common::small_host());
    for size in [SMALL, LARGE] {
        let buffer = render(&snap, &focused(Pane::Log), size);
        let y = (0..buffer.area.height)
            .find(|y| row_text(&buffer, *y).contains("samplers:"))
            .expect("sampler strip shown");
        let row = row_text(&buffer, y);
        let byte = row.find("✗ cannot read").expect("error shown first");
        let x = row[..byte].chars().count() as u16;
        assert_eq!(buffer[(x, y)].fg, theme::HOT, "{row}");
        assert!(row.contains("disks"), "{row}");
        insta::assert_snapshot!(format!("sampler_error_{}", size_name(size)), text(&buffer));
    }
    let healthy = text(&render(&common::small_host(), &focused(Pane::Log), SMALL));
    assert!(
        healthy.contains("samplers: cpu 0.1ms · memory 0.6ms"),
        "{healthy}"
    );
    assert!(!healthy.contains('✗'), "{healthy}");
}

#[test]
fn containers_without_an_agent_label_say_every_container_counts() {
    let mut snap = common::small_host();
    snap.containers.agent_label = None;
    snap.containers.total_seen = 0;
    let shown = text(&render(&snap, &focused(Pane::Containers), SMALL));
    assert!(
        shown.contains("every container counts as an agent"),
        "{shown}"
    );
    assert!(!shown.contains("sutazai.agent"), "{shown}");
    snap.containers.agent_label = Some("team.agent".into());
    let shown = text(&render(&snap, &focused(Pane::Containers), SMALL));
    assert!(
        shown.contains("No agent containers (label team.agent)"),
        "{shown}"
    );
}

#[test]
fn the_grid_shows_every_pane_at_once() {
    let shown = text(&render(
        &common::with_containers(131),
        &App::default(),
        LARGE,
    ));
    for title in [
        "Cores",
        "Memory & pressure",
        "Containers ·",
        "Processes · 40 busiest",
        "Disks & network",
        "Log",
        "Pools",
        "Cache",
        "Balancer",
        "Proposals",
        "off ([cache] enabled = false)",
        "off (set [balancer] enabled = true)",
    ] {
        assert!(shown.contains(title), "{title}:\n{shown}");
    }
}

#[test]
fn the_selection_follows_its_row_when_a_new_proposal_arrives_above() {
    use sutazai_top::model::Risk;
    let before = common::with_active_changes(common::numa64());
    let mut app = focused(Pane::Proposals);
    app.handle_key(press(KeyCode::Char('j')), &before);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('r')), &before),
        Some(Command::Rollback(7))
    );
    // Next tick: a proposal now heads the list; r must still mean batch 7.
    let after = common::with_proposal(common::with_active_changes(common::numa64()), Risk::Low);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('r')), &after),
        Some(Command::Rollback(7))
    );
    assert_eq!(
        app.handle_key(press(KeyCode::Char('a')), &after),
        None,
        "a on a batch row does nothing"
    );
}

#[test]
fn an_applied_fix_above_the_mode_offers_its_rollback() {
    use sutazai_top::model::ProposalStatus;
    use sutazai_top::model::Risk;
    let mut snap = common::with_proposal(common::numa64(), Risk::Medium);
    snap.proposals[0].status = ProposalStatus::Applied { batch: 5 };
    snap.mode = sutazai_top::model::Mode::Balanced;
    let shown = text(&render(&snap, &focused(Pane::Proposals), SMALL));
    assert!(
        shown.contains("applied #5") && !shown.contains("ABOVE MODE"),
        "{shown}"
    );
    snap.mode = sutazai_top::model::Mode::Conservative;
    let shown = text(&render(&snap, &focused(Pane::Proposals), SMALL));
    assert!(shown.contains("ABOVE MODE, r rolls back"), "{shown}");
    let mut app = focused(Pane::Proposals);
    assert_eq!(
        app.handle_key(press(KeyCode::Char('r')), &snap),
        Some(Command::Rollback(5))
    );
}

#[test]
fn the_cores_pane_shows_which_agents_are_pinned_where() {
    let mut snap = common::with_containers(4);
    let shown = text(&render(&snap, &focused(Pane::Cores), LARGE));
    assert!(!shown.contains("pinned agents"), "{shown}");
    for (i, c) in snap.containers.agents.iter_mut().enumerate() {
        c.state = "running".into();
        c.cpuset_cpus = if i < 2 { "1".into() } else { "0-1".into() };
    }
    let shown = text(&render(&snap, &focused(Pane::Cores), LARGE));
    let names: Vec<String> = snap.containers.agents[..2]
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let expected = format!("cpus 1 ← {}, {}", names[0], names[1]);
    assert!(
        shown.contains("pinned agents:") && shown.contains(&expected),
        "{shown}"
    );
    assert!(
        !shown.contains("cpus 0-1 ←"),
        "agents on every CPU are not pinned: {shown}"
    );
}

#[test]
fn validation_verdicts_show_in_the_list_and_the_details() {
    use sutazai_top::model::Guard;
    use sutazai_top::model::{Measure, Risk};
    use sutazai_top::model::{ProposalStatus, Verdict};
    let mut snap = common::with_proposal(common::numa64(), Risk::Low);
    let p = &mut snap.proposals[0];
    p.status = ProposalStatus::Applied { batch: 5 };
    p.validation.applied_at_ms = Some(snap.taken_at_ms);
    p.validation.before = vec![12.0, 12.2, 12.1];
    p.validation.after = vec![6.0, 5.8];
    p.validation.guards = vec![Guard {
        figure: "host PSI memory some".into(),
        measure: Measure::HostPsiMemorySome,
        before: vec![1.0],
        after: vec![2.0],
    }];
    // Still inside its window.
    let shown = text(&render(&snap, &focused(Pane::Proposals), WIDE_TAB));
    assert!(shown.contains("validating"), "{shown}");
    assert!(shown.contains("validation: watching"), "{shown}");

    snap.proposals[0].validation.verdict = Some(Verdict::Helped {
        before: 12.1,
        after: 5.9,
        improvement_pct: 51.2,
    });
    let shown = text(&render(&snap, &focused(Pane::Proposals), WIDE_TAB));
    assert!(shown.contains("applied #5      low    -51%"), "{shown}");
    assert!(
        shown.contains(
            "validation: helped 51% (12.1 -> 5.9); mean of 3 readings before 12.1, of 2 after 5.9; \
             guards: host PSI memory some 1.0 -> 2.0"
        ),
        "{shown}"
    );

    snap.proposals[0].status = ProposalStatus::RolledBack { batch: 5 };
    snap.proposals[0].validation.verdict = Some(Verdict::Regressed {
        figure: "host PSI memory some".into(),
        before: 4.0,
        after: 30.0,
    });
    let shown = text(&render(&snap, &focused(Pane::Proposals), WIDE_TAB));
    assert!(
        shown.contains("rolled back #5  low    regressed"),
        "{shown}"
    );
    assert!(
        shown.contains("validation: made host PSI memory some worse (4.0 -> 30.0)"),
        "{shown}"
    );
}

/// The coordinator in the faces (issue 16): the Containers pane gains an ALLOC column and
/// counts once something is declared; the Cores pane says who owns each CPU per node.
#[test]
fn declared_agents_show_their_allocation_and_the_cores_their_owner() {
    let mut snap = common::numa64();
    snap.containers = common::with_containers(6).containers;
    let declare = |c: &mut sutazai_top::model::ContainerStat, pairs: &[(&str, &str)]| {
        for (k, v) in pairs {
            c.labels.insert(k.to_string(), v.to_string());
        }
        c.class = sutazai_top::containers::agent::class_of(&c.labels);
        match sutazai_top::model::need::need_from_labels(
            &c.labels,
            c.class == Some(sutazai_top::model::AgentClass::Latency),
        ) {
            Ok(need) => c.need = need,
            Err(why) => c.need_error = Some(why),
        }
    };
    for c in &mut snap.containers.agents {
        c.state = "running".to_string();
    }
    declare(
        &mut snap.containers.agents[0],
        &[("sutazai.class", "latency"), ("sutazai.cpus", "2")],
    );
    declare(&mut snap.containers.agents[1], &[("sutazai.memory", "4x")]);
    let config = sutazai_top::coordinator::CoordinatorConfig {
        reserved_cpus: "0".to_string(),
        ..Default::default()
    };
    snap.coordinator = Some(sutazai_top::coordinator::plan(&snap, &config));

    let shown = text(&render(&snap, &focused(Pane::Containers), LARGE));
    assert!(shown.contains("ALLOC"), "{shown}");
    assert!(
        shown.contains("coordinator: 1 exclusive, 1 misdeclared"),
        "{shown}"
    );
    let row = |name: &str| {
        shown
            .lines()
            .find(|l| l.contains(&format!("│{name} ")))
            .unwrap_or_else(|| panic!("{name} in {shown}"))
            .to_string()
    };
    let first = &snap.containers.agents[0].name;
    let second = &snap.containers.agents[1].name;
    assert!(row(first).contains("excl 2*"), "{}", row(first));
    assert!(row(second).contains("misdecl*"), "{}", row(second));

    // One pane, tall enough for 64 CPUs and the owner lines.
    let cores = text(&render(&snap, &focused(Pane::Cores), (150, 60)));
    assert!(cores.contains("cores by owner (coordinator):"), "{cores}");
    // CPU 0 is reserved; node 0 (31 free) is fuller than node 1 (32), so the two CPUs are
    // one whole core there: 1 and its sibling 33.
    assert!(
        cores.contains(&format!(
            "node 0: reserved 0 · {first} 1,33 · shared 2-15,32,34-47"
        )),
        "{cores}"
    );
    assert!(cores.contains("node 1: shared 16-31,48-63"), "{cores}");

    // Nothing declared: no column, no counts (frames of hosts without declarations keep).
    let mut plain = snap.clone();
    plain.containers = common::with_containers(6).containers;
    plain.coordinator = Some(sutazai_top::coordinator::plan(&plain, &Default::default()));
    let shown = text(&render(&plain, &focused(Pane::Containers), LARGE));
    assert!(
        !shown.contains("ALLOC") && !shown.contains("coordinator:"),
        "{shown}"
    );
}
