"""What runs in a child after the fork (``runner``), the app's bootstrap and
its fork-safety steps (``bootstrap``), soft time limits (``softlimit``), and
the channels between a child and its supervisor: the shared-memory
scoreboard, the ring of finished jobs and the wake-up pipe."""
