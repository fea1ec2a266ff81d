//! Network interfaces from /proc/net/dev: byte and packet rates, errors plus drops.
//!
//! The file is parsed by procfs-core's `InterfaceDeviceStatus`, which reads it whole: a line
//! that is not a current kernel's (all 16 counters, a space after the colon; some 2.6-era
//! kernels printed none) makes the reading an error rather than a partial list.

use std::path::PathBuf;
use std::time::Duration;

use procfs_core::FromBufRead;
use procfs_core::net::{DeviceStatus, InterfaceDeviceStatus};

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

/// Parse /proc/net/dev into (interface, counters) in file order; empty when procfs-core
/// refuses the file (see `read_net_dev`).
pub fn parse_net_dev(text: &str) -> Vec<(String, NetCounters)> {
    read_net_dev(text).unwrap_or_default()
}

/// The interfaces of /proc/net/dev in file order, or `None` when procfs-core refuses it.
fn read_net_dev(text: &str) -> Option<Vec<(String, NetCounters)>> {
    let Ok(InterfaceDeviceStatus(mut by_name)) =
        InterfaceDeviceStatus::from_buf_read(text.as_bytes())
    else {
        tracing::debug!("procfs-core refused /proc/net/dev");
        return None;
    };
    // procfs-core keys the interfaces by name; the kernel's order (lo first, then as they
    // came up) is what the list shows, so walk the lines for it. Names hold no ':' or space.
    let ordered = text
        .lines()
        .skip(2)
        .filter_map(|line| {
            let name = line.split_once(':')?.0.trim();
            let status = by_name.remove(name).filter(|_| !name.is_empty())?;
            let counters = counters(&status);
            Some((status.name, counters))
        })
        .collect();
    Some(ordered)
}

fn counters(status: &DeviceStatus) -> NetCounters {
    NetCounters {
        rx_bytes: status.recv_bytes,
        rx_packets: status.recv_packets,
        rx_errs: status.recv_errs,
        rx_drop: status.recv_drop,
        tx_bytes: status.sent_bytes,
        tx_packets: status.sent_packets,
        tx_errs: status.sent_errs,
        tx_drop: status.sent_drop,
    }
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
        let current =
            read_net_dev(&read_to_string(&self.path)?).ok_or_else(|| HostError::Parse {
                path: self.path.clone(),
                what: "not the kernel's interface table".to_string(),
            })?;
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
    fn odd_files_are_refused_whole_without_panic() {
        let header = DEV.lines().take(2).collect::<Vec<_>>().join("\n");
        // Some 2.6-era kernels printed no space after the colon; not a target any more.
        let glued = format!("{header}\neth1:10 2 0 0 0 0 0 0 20 3 0 0 0 0 0 0\n");
        let short = format!("{header}\neth0: 1 2 3\n");
        let garbage = format!("{header}\neth1: a b c d e f g h i j k l m n o p\n");
        for text in [glued, short, garbage] {
            assert_eq!(read_net_dev(&text), None, "{text}");
            assert!(parse_net_dev(&text).is_empty());
        }
        assert_eq!(read_net_dev(&header), Some(Vec::new()));
        assert!(parse_net_dev("").is_empty());
    }

    #[test]
    fn interfaces_keep_the_kernel_order() {
        let text = format!(
            "{DEV}  veth9: 1 1 0 0 0 0 0 0 2 2 0 0 0 0 0 0\n   br0: 3 3 0 0 0 0 0 0 4 4 0 0 0 0 0 0\n"
        );
        let names: Vec<String> = parse_net_dev(&text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["lo", "eth0", "veth9", "br0"]);
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
