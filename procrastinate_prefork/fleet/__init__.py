"""The fleet table and what reads it: the package's SQL (``queries``,
``schema``; the text is in ``procrastinate_prefork/sql``), the rows written
(``table``), one snapshot of a supervisor (``snapshot``), the health rules,
the status views, process identity and the recovery of dead processes' jobs."""
