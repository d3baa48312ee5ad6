from bench.peak import main

main()
