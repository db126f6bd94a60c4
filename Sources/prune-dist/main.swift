import Coordinator

PruneDistCommand.main()
