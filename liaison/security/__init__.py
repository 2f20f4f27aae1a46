"""Who may connect to the bus and what each principal may do: TLS, SCRAM credentials, ACLs and quotas."""
