//! Network interfaces from /proc/net/dev: byte and packet rates, errors plus drops.

use std::path::PathBuf;
use std::time::Duration;

use crate::host::counter_rate;
use crate::host::{HostError, HostRoots, NamedReading, rates_by_name, read_to_string};
use crate::model::NetStat;

/// The /proc/net/dev counters we use for one interface, since it came up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

impl NetCounters {
    fn errors_and_drops(&self) -> u64 {
        self.rx_errs
            .saturating_add(self.rx_drop)
            .saturating_add(self.tx_errs)
            .saturating_add(self.tx_drop)
    }
}

/// Parse /proc/net/dev into (interface, counters) in file order. The two header lines have no
/// colon and are skipped like any other line that is short or holds garbage.
pub fn parse_net_dev(text: &str) -> Vec<(String, NetCounters)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let parsed = parse_counters(rest);
            let name = name.trim();
            if parsed.is_none() || name.is_empty() {
                tracing::debug!("skipping malformed net/dev line");
                return None;
            }
            Some((name.to_string(), parsed?))
        })
        .collect()
}

/// Receive: bytes packets errs drop fifo frame compressed multicast; then transmit: bytes
/// packets errs drop ... Everything up to tx drop (field 11) must be there.
fn parse_counters(rest: &str) -> Option<NetCounters> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| words.get(i)?.parse::<u64>().ok();
    Some(NetCounters {
        rx_bytes: field(0)?,
        rx_packets: field(1)?,
        rx_errs: field(2)?,
        rx_drop: field(3)?,
        tx_bytes: field(8)?,
        tx_packets: field(9)?,
        tx_errs: field(10)?,
        tx_drop: field(11)?,
    })
}

/// Rates for one interface between two readings `elapsed` apart; counters that went back
/// (interface recreated) give 0.
pub fn net_stat_between(
    name: &str,
    prev: &NetCounters,
    cur: &NetCounters,
    elapsed: Duration,
) -> NetStat {
    NetStat {
        name: name.to_string(),
        rx_bytes_per_sec: counter_rate(prev.rx_bytes, cur.rx_bytes, elapsed),
        tx_bytes_per_sec: counter_rate(prev.tx_bytes, cur.tx_bytes, elapsed),
        rx_packets_per_sec: counter_rate(prev.rx_packets, cur.rx_packets, elapsed),
        tx_packets_per_sec: counter_rate(prev.tx_packets, cur.tx_packets, elapsed),
        errors_per_sec: counter_rate(prev.errors_and_drops(), cur.errors_and_drops(), elapsed),
    }
}

/// Samples every interface; keeps the previous reading for rates.
pub struct NetSampler {
    path: PathBuf,
    prev: NamedReading<NetCounters>,
}

impl NetSampler {
    pub fn new(roots: &HostRoots) -> Self {
        NetSampler {
            path: roots.proc.join("net").join("dev"),
            prev: None,
        }
    }

    /// One reading, in file order. Rates are 0 on the first call and for a new interface.
    pub fn sample(&mut self) -> Result<Vec<NetStat>, HostError> {
        let current = parse_net_dev(&read_to_string(&self.path)?);
        let stats = rates_by_name(&mut self.prev, current, net_stat_between);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 136801119    4538    1    2    0     0          0         0   288541    2634    3    4    0     0       0          0
";

    #[test]
    fn parses_interfaces_and_skips_headers() {
        let parsed = parse_net_dev(DEV);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "lo");
        assert_eq!(parsed[0].1.rx_bytes, 3193);
        let eth0 = parsed[1].1;
        assert_eq!(
            eth0,
            NetCounters {
                rx_bytes: 136801119,
                rx_packets: 4538,
                rx_errs: 1,
                rx_drop: 2,
                tx_bytes: 288541,
                tx_packets: 2634,
                tx_errs: 3,
                tx_drop: 4,
            }
        );
        assert_eq!(eth0.errors_and_drops(), 10);
    }

    #[test]
    fn old_style_line_without_space_after_colon_parses() {
        let parsed = parse_net_dev("eth1:10 2 0 0 0 0 0 0 20 3 0 0 0 0 0 0\n");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.rx_bytes, 10);
        assert_eq!(parsed[0].1.tx_packets, 3);
    }

    #[test]
    fn short_garbage_and_nameless_lines_are_skipped() {
        let text = "eth0: 1 2 3\neth1: a b c d e f g h i j k l m n o p\n: 1 2 3 4 5 6 7 8 9 10 11 12\n\nwlan0: 5 1 0 0 0 0 0 0 6 1 0 0\n";
        let parsed = parse_net_dev(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "wlan0");
        assert_eq!(parsed[0].1.tx_bytes, 6);
        assert!(parse_net_dev("").is_empty());
    }

    #[test]
    fn rates_count_errors_and_drops_both_ways() {
        let prev = NetCounters::default();
        let cur = NetCounters {
            rx_bytes: 2000,
            rx_packets: 20,
            rx_errs: 1,
            rx_drop: 1,
            tx_bytes: 1000,
            tx_packets: 10,
            tx_errs: 1,
            tx_drop: 1,
        };
        let stat = net_stat_between("eth0", &prev, &cur, Duration::from_secs(2));
        assert_eq!(stat.rx_bytes_per_sec, 1000.0);
        assert_eq!(stat.tx_bytes_per_sec, 500.0);
        assert_eq!(stat.rx_packets_per_sec, 10.0);
        assert_eq!(stat.tx_packets_per_sec, 5.0);
        assert_eq!(stat.errors_per_sec, 2.0);
        let back = net_stat_between("eth0", &cur, &prev, Duration::from_secs(2));
        assert_eq!(back.rx_bytes_per_sec, 0.0);
        assert_eq!(back.errors_per_sec, 0.0);
    }

    #[test]
    fn sampler_first_call_lists_interfaces_with_zero_rates() {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots::under(dir.path());
        let mut sampler = NetSampler::new(&roots);
        assert!(matches!(sampler.sample(), Err(HostError::Io { .. })));
        std::fs::create_dir_all(roots.proc.join("net")).unwrap();
        std::fs::write(roots.proc.join("net/dev"), DEV).unwrap();
        let first = sampler.sample().unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].name, "eth0");
        assert_eq!(first[1].rx_bytes_per_sec, 0.0);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            roots.proc.join("net/dev"),
            DEV.replace("3193      29", "9193      35"),
        )
        .unwrap();
        let second = sampler.sample().unwrap();
        assert!(second[0].rx_bytes_per_sec > 0.0);
        assert_eq!(second[1].rx_bytes_per_sec, 0.0);
    }
}
