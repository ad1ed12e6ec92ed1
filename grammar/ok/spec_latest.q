recon_result{schema="itcftth", table="srv_cfsver_ct_main"} | latest
