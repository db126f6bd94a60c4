import Engine

/// What every rank does during a prune run: hold its calibration shard, run the current block on it,
/// accumulate local statistics, and solve the linears it owns. Filled in by the pruning work (issue 4).
public enum WorkerInfo {
    public static let name = "Worker"
}
