"""The processes the pipeline starts beside itself and the machinery around them: free ports, file locks, stopping a
process, the local MongoDB-protocol server and its guard, Triton's launcher. Imports nothing heavy (the guard runs as a
process of its own) and nothing from the layers above."""
