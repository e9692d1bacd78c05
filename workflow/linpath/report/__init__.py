"""What comes out: tables (runs, paths, shapes, Table 1, per experiment), the threshold sensitivity,
the tables so far, and the figures."""
