from imitatoes.commands.cli import main

main()
