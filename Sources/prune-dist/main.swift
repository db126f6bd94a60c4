import Coordinator

PruneDistCommand.launch()
