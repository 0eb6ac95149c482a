"""AIOS, a streaming multi-agent platform on Kafka, as one import namespace.

The design card's layers live in the repository's top-level folders and are linked in here, so an
installed AIOS is ``aios.schemas``, ``aios.connectors``, ``aios.agents``, ``aios.streams`` and
``aios.api``, beside the layers above them: ``aios.cli`` (the command line), ``aios.bench`` and
``aios.devstack``. See ARCHITECTURE.md.
"""
