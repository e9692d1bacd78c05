"""The workflow config as a plan: settings and their references, run ids, spawned children, pairs and
planes, what it will cost, and the one place the config is read and checked. Pure Python except `cost`
(it counts paths on the real model): the Snakefile plans at parse time."""
