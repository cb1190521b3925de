"""The supervisor and its parts: the loop (``arbiter``), what it does on each
turn (``startup``, ``signals``, ``reaping``, ``deadlines``, ``scaling``,
``maintenance``), its pure rules (``policy``, ``slots``), its children as it
sees them (``children``), its database session (``db``) and what it asks of
the operating system (``system``)."""
