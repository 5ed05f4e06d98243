from instr.cli import main

main()
