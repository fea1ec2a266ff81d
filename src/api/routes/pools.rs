//! `GET /api/pools`: the memory pools as the Pools pane shows them, ratios included.

use crate::model::Snapshot;

/// Each pool's figures with its deduplication and compression ratios, per agent what it
/// holds and what sharing saves it, and what KSM merges for agents outside the pools;
/// `Err` says why the store is not served.
pub(super) fn pools(snap: &Snapshot) -> Result<serde_json::Value, String> {
    let view = &snap.pools;
    let Some(store) = &view.serving else {
        return Err(view
            .not_serving
            .clone()
            .unwrap_or_else(|| "the memory pools are not served".into()));
    };
    let pools: Vec<serde_json::Value> = store
        .pools
        .iter()
        .map(|pool| {
            let mut value = serde_json::to_value(pool).unwrap_or_default();
            if let Some(fields) = value.as_object_mut() {
                fields.insert("dedup_ratio".into(), pool.dedup_ratio().into());
                fields.insert("compression_ratio".into(), pool.compression_ratio().into());
            }
            value
        })
        .collect();
    Ok(serde_json::json!({
        "socket": store.socket,
        "clients": store.clients,
        "pools": pools,
        "agents": store.agents,
        "ksm": snap
            .ksm_outside_pools()
            .into_iter()
            .map(|(agent, ksm)| serde_json::json!({"agent": agent, "ksm": ksm}))
            .collect::<Vec<_>>(),
    }))
}
