/// Every error prune-dist reports to its users. Each case names the file (and tensor) involved and
/// says what was expected and what was found, so a user can act on the message alone.
public struct PruneDistError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case io                // a file could not be opened, read, mapped or written
        case format            // a file is not what its format says (truncated, bad header, bad offsets)
        case dtype             // an unsupported or unexpected element type
        case shape             // a tensor's shape differs from what the model needs
        case missingTensor     // a tensor the model needs is absent
        case config            // config.json is missing a key or holds an impossible value
        case nonFinite         // NaN or Inf in a weight
        case data              // calibration or evaluation data unusable (empty, too short)
        case argument          // an impossible option (sparsity outside [0,1), bad N:M, ...)
        case numerics          // a factorisation failed beyond recovery
        case communication     // MPI reported an error
        case unsupported       // a valid input we do not handle (architecture, quantisation type)
        case busy              // another prune-dist run holds the output's lock
        case interrupted       // SIGINT or SIGTERM ended the run
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
