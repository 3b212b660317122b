DROP TABLE rec_state; DROP TABLE rec_user_products; DROP TABLE rec_scores; DROP TABLE rec_catalog;
