"""``python -m aios.cli``: how ``aios up`` starts the processes it supervises."""

from aios.cli import main

main()
