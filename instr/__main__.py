from instr.guard import main

main()
