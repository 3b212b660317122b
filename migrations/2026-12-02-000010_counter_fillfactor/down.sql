ALTER TABLE rec_user_products RESET (fillfactor);
ALTER TABLE rec_scores RESET (fillfactor);
ALTER TABLE an_products RESET (fillfactor);
ALTER TABLE an_users RESET (fillfactor);
