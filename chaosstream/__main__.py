from chaosstream.cli import main

main()
