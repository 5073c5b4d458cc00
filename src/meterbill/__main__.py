from meterbill.cli import main

main()
