"""crm-genesys: keeps Genesys Cloud External Contacts in exact parity with a CRM."""
