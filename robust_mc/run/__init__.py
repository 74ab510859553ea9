"""Where and how a run executes: the runtime (device, threads, precision), its processes
(torchrun), atomic files, interrupts, claims on shared work, progress and provenance."""
