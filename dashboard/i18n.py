"""French and English texts of the server-rendered pages."""

from __future__ import annotations

from aiohttp import web

LANGUAGES = ("en", "fr")

TEXTS: dict[str, dict[str, str]] = {
    "sign_in": {"en": "Sign in", "fr": "Se connecter"},
    "sign_out": {"en": "Sign out", "fr": "Se déconnecter"},
    "email": {"en": "Email", "fr": "E-mail"},
    "password": {"en": "Password", "fr": "Mot de passe"},
    "bad_login": {
        "en": "Wrong email or password.",
        "fr": "E-mail ou mot de passe incorrect.",
    },
    "too_many_attempts": {
        "en": "Too many attempts. Wait a minute and try again.",
        "fr": "Trop de tentatives. Patientez une minute puis réessayez.",
    },
    "forbidden": {
        "en": "Your role does not give access to this page.",
        "fr": "Votre rôle ne donne pas accès à cette page.",
    },
    "console": {"en": "Console", "fr": "Console"},
    # Advisor console (dashboard/console.py); the "console." keys also go to console.js.
    "console.title": {"en": "Advisor console", "fr": "Console conseiller"},
    "console.noscript": {
        "en": "The console needs JavaScript to show visitors live.",
        "fr": "La console a besoin de JavaScript pour afficher les visiteurs en direct.",
    },
    "console.skip": {"en": "Skip to the request queue", "fr": "Aller aux demandes"},
    "console.sites": {"en": "Sites", "fr": "Sites"},
    "console.all_sites": {"en": "All sites", "fr": "Tous les sites"},
    "console.no_sites": {
        "en": "Your account has no site yet.",
        "fr": "Votre compte n'a encore aucun site.",
    },
    "console.requests": {"en": "Callback requests", "fr": "Demandes de rappel"},
    "console.no_requests": {"en": "No request waiting.", "fr": "Aucune demande en attente."},
    "console.visitors": {"en": "Live visitors", "fr": "Visiteurs en direct"},
    "console.no_visitors": {
        "en": "Nobody is on your sites right now.",
        "fr": "Personne n'est sur vos sites pour le moment.",
    },
    "console.visitor": {"en": "Visitor", "fr": "Visiteur"},
    "console.pick_visitor": {
        "en": "Select a visitor or a request to follow their journey live.",
        "fr": "Sélectionnez un visiteur ou une demande pour suivre son parcours en direct.",
    },
    "console.col_visitor": {"en": "Visitor", "fr": "Visiteur"},
    "console.col_page": {"en": "Current page", "fr": "Page actuelle"},
    "console.col_time": {"en": "On site", "fr": "Sur le site"},
    "console.col_cart": {"en": "Cart", "fr": "Panier"},
    "console.col_item": {"en": "Item", "fr": "Article"},
    "console.col_channel": {"en": "Channel / campaign", "fr": "Canal / campagne"},
    "console.col_device": {"en": "Device", "fr": "Appareil"},
    "console.col_request": {"en": "Request", "fr": "Demande"},
    "console.col_status": {"en": "Status", "fr": "Statut"},
    "console.col_actions": {"en": "Actions", "fr": "Actions"},
    "console.claim": {"en": "Claim", "fr": "Prendre"},
    "console.call_back": {"en": "Call back", "fr": "Rappeler"},
    "console.calling": {"en": "Calling…", "fr": "Appel…"},
    "console.outcome": {"en": "Outcome", "fr": "Résultat"},
    "console.view": {"en": "Visitor", "fr": "Visiteur"},
    "console.tag_sale": {"en": "Sale", "fr": "Vente"},
    "console.tag_lead": {"en": "Lead", "fr": "Prospect"},
    "console.tag_no_answer": {"en": "No answer", "fr": "Pas de réponse"},
    "console.tag_spam": {"en": "Spam", "fr": "Spam"},
    "console.status_open": {"en": "Waiting", "fr": "En attente"},
    "console.status_mine": {"en": "Yours", "fr": "Pris par vous"},
    "console.status_taken": {"en": "Taken by {who}", "fr": "Pris par {who}"},
    "console.status_closed": {"en": "Closed", "fr": "Clôturée"},
    "console.outside_hours": {"en": "Outside hours", "fr": "Hors horaires"},
    "console.no_session": {"en": "No visit linked", "fr": "Aucune visite liée"},
    "console.conn_connecting": {"en": "Connecting…", "fr": "Connexion…"},
    "console.conn_live": {"en": "Live", "fr": "En direct"},
    "console.conn_offline": {"en": "Reconnecting…", "fr": "Reconnexion…"},
    "console.conn_paused": {"en": "Live updates paused", "fr": "Direct en pause"},
    "console.conn_expired": {
        "en": "Session expired: sign in again",
        "fr": "Session expirée : reconnectez-vous",
    },
    "console.notify_enable": {"en": "Enable alerts", "fr": "Activer les alertes"},
    "console.notify_on": {"en": "Alerts on", "fr": "Alertes activées"},
    "console.notify_title": {"en": "Callback request", "fr": "Demande de rappel"},
    "console.notify_body": {"en": "{phone} on {site}", "fr": "{phone} sur {site}"},
    "console.incoming": {"en": "Incoming call", "fr": "Appel entrant"},
    "console.in_progress": {"en": "Call in progress", "fr": "Appel en cours"},
    "console.call_ended": {"en": "Call ended", "fr": "Appel terminé"},
    "console.unmatched": {
        "en": "Caller not matched to a visit",
        "fr": "Appelant non rattaché à une visite",
    },
    "console.open_visitor": {"en": "Open visitor", "fr": "Ouvrir la fiche"},
    "console.dismiss": {"en": "Dismiss", "fr": "Masquer"},
    "console.close": {"en": "Close", "fr": "Fermer"},
    "console.now_on": {"en": "Now on", "fr": "Actuellement sur"},
    "console.journey": {"en": "Journey", "fr": "Parcours"},
    "console.source": {"en": "Acquisition", "fr": "Acquisition"},
    "console.channel": {"en": "Channel", "fr": "Canal"},
    "console.src": {"en": "Source", "fr": "Source"},
    "console.medium": {"en": "Medium", "fr": "Support"},
    "console.campaign": {"en": "Campaign", "fr": "Campagne"},
    "console.keyword": {"en": "Keyword", "fr": "Mot-clé"},
    "console.landing": {"en": "Landing page", "fr": "Page d'entrée"},
    "console.geo": {"en": "Location", "fr": "Localisation"},
    "console.device": {"en": "Device", "fr": "Appareil"},
    "console.language": {"en": "Language", "fr": "Langue"},
    "console.cart": {"en": "Cart", "fr": "Panier"},
    "console.empty_cart": {"en": "Empty cart", "fr": "Panier vide"},
    "console.items_one": {"en": "{n} item", "fr": "{n} article"},
    "console.items_other": {"en": "{n} items", "fr": "{n} articles"},
    "console.device_desktop": {"en": "Desktop", "fr": "Ordinateur"},
    "console.device_mobile": {"en": "Mobile", "fr": "Mobile"},
    "console.device_tablet": {"en": "Tablet", "fr": "Tablette"},
    "console.total": {"en": "Total", "fr": "Total"},
    "console.qty": {"en": "Qty", "fr": "Qté"},
    "console.calls": {"en": "Calls", "fr": "Appels"},
    "console.no_calls": {"en": "No call.", "fr": "Aucun appel."},
    "console.visitor_requests": {"en": "Requests", "fr": "Demandes"},
    "console.none": {"en": "None.", "fr": "Aucune."},
    "console.inbound": {"en": "Incoming", "fr": "Entrant"},
    "console.outbound": {"en": "Callback", "fr": "Rappel"},
    "console.pages_one": {"en": "{n} page", "fr": "{n} page"},
    "console.pages_other": {"en": "{n} pages", "fr": "{n} pages"},
    "console.message": {"en": "Message", "fr": "Message"},
    "console.loading": {"en": "Loading…", "fr": "Chargement…"},
    "console.left": {"en": "Visit ended", "fr": "Visite terminée"},
    "console.consent_no": {
        "en": "No consent: this visit only",
        "fr": "Sans consentement : cette visite seulement",
    },
    "console.err_already_claimed": {
        "en": "Another advisor already took this request.",
        "fr": "Un autre conseiller a déjà pris cette demande.",
    },
    "console.err_claimed_by_other": {
        "en": "Another advisor handles this request.",
        "fr": "Un autre conseiller traite cette demande.",
    },
    "console.err_no_advisor_phone": {
        "en": "Add your phone number to your profile (your email, top right) to place callbacks.",
        "fr": "Ajoutez votre numéro de téléphone à votre profil (votre e-mail, en haut à droite) pour rappeler.",
    },
    "console.err_carrier_unavailable": {
        "en": "Calls are unavailable: no carrier is configured.",
        "fr": "Appels indisponibles : aucun opérateur n'est configuré.",
    },
    "console.err_offline": {
        "en": "Not connected: try again in a moment.",
        "fr": "Pas de connexion : réessayez dans un instant.",
    },
    "console.err_service_unavailable": {
        "en": "Calltrack cannot reach its database right now: try again in a moment.",
        "fr": "Calltrack ne joint pas sa base de données pour l'instant : réessayez dans un instant.",
    },
    "console.err_generic": {"en": "That did not work: {msg}", "fr": "L'action a échoué : {msg}"},
    # Error pages for browser navigations (dashboard/errors.py).
    "error.title.400": {
        "en": "This request could not be handled",
        "fr": "Cette demande n’a pas pu être traitée",
    },
    "error.title.401": {"en": "Please sign in", "fr": "Veuillez vous connecter"},
    "error.title.403": {"en": "Access denied", "fr": "Accès refusé"},
    "error.title.404": {"en": "Page not found", "fr": "Page introuvable"},
    "error.title.405": {
        "en": "This request could not be handled",
        "fr": "Cette demande n’a pas pu être traitée",
    },
    "error.title.409": {
        "en": "This request could not be handled",
        "fr": "Cette demande n’a pas pu être traitée",
    },
    "error.title.413": {
        "en": "This request is too large",
        "fr": "Cette demande est trop volumineuse",
    },
    "error.title.429": {"en": "Too many requests", "fr": "Trop de demandes"},
    "error.title.503": {
        "en": "Calltrack is briefly unavailable",
        "fr": "Calltrack est momentanément indisponible",
    },
    "error.title.other": {"en": "Something went wrong", "fr": "Une erreur est survenue"},
    "error.back": {"en": "Back to Calltrack", "fr": "Retour à Calltrack"},
    "error.code": {"en": "Error code:", "fr": "Code d’erreur :"},
    "error.retry": {
        "en": "This page tries again by itself in a few seconds.",
        "fr": "Cette page réessaie d’elle-même dans quelques secondes.",
    },
    # Site settings page (dashboard/site_settings.py).
    "settings.title": {"en": "Site settings", "fr": "Réglages du site"},
    "settings.site": {"en": "Site", "fr": "Site"},
    "settings.show": {"en": "Show", "fr": "Afficher"},
    "settings.no_site": {
        "en": "Your account has no site yet: create one with `calltrack site create`.",
        "fr": "Votre compte n'a encore aucun site : créez-en un avec `calltrack site create`.",
    },
    "settings.unknown_site": {
        "en": "No such site in your account.",
        "fr": "Ce site n'existe pas dans votre compte.",
    },
    "settings.snippet": {"en": "Snippet", "fr": "Code de suivi"},
    "settings.snippet_intro": {
        "en": "Paste these two tags into the <head> of every page of {domain}.",
        "fr": "Collez ces deux balises dans le <head> de chaque page de {domain}.",
    },
    "settings.copy": {"en": "Copy", "fr": "Copier"},
    "settings.copied": {"en": "Copied", "fr": "Copié"},
    "settings.widget": {"en": "Contact widget", "fr": "Widget de contact"},
    "settings.widget_on": {
        "en": "Show the “Call me back” button on the site",
        "fr": "Afficher le bouton « Être rappelé » sur le site",
    },
    "settings.widget_hint": {
        "en": "Visitors leave their number; the request appears in the advisor console.",
        "fr": "Le visiteur laisse son numéro ; la demande apparaît dans la console conseiller.",
    },
    "settings.timezone": {"en": "Time zone", "fr": "Fuseau horaire"},
    "settings.timezone_hint": {
        "en": "The opening hours are read in this zone (an IANA name such as Europe/Paris).",
        "fr": "Les horaires d'ouverture sont lus dans ce fuseau (un nom IANA comme Europe/Paris).",
    },
    "settings.hours": {"en": "Opening hours", "fr": "Horaires d'ouverture"},
    "settings.hours_hint": {
        "en": "One or more ranges per day, e.g. 09:00-12:30, 14:00-18:00. An empty day is closed; a range that ends before it starts runs past midnight. Requests made outside the hours are kept, and the visitor is told when you reopen.",
        "fr": "Une ou plusieurs plages par jour, par ex. 09:00-12:30, 14:00-18:00. Un jour vide est fermé ; une plage qui finit avant de commencer passe minuit. Les demandes faites hors horaires sont gardées et le visiteur apprend quand vous rouvrez.",
    },
    "settings.always_open": {
        "en": "Always open (no opening hours)",
        "fr": "Toujours ouvert (pas d'horaires)",
    },
    "settings.closed": {"en": "Closed", "fr": "Fermé"},
    "settings.now_open": {
        "en": "Now in {zone}: {day} {time}, open.",
        "fr": "En ce moment à {zone} : {day} {time}, ouvert.",
    },
    "settings.now_closed": {
        "en": "Now in {zone}: {day} {time}, closed.",
        "fr": "En ce moment à {zone} : {day} {time}, fermé.",
    },
    "settings.save": {"en": "Save", "fr": "Enregistrer"},
    "settings.saved": {
        "en": "Settings saved. Pages pick them up within five minutes (browsers keep the script that long).",
        "fr": "Réglages enregistrés. Les pages les prennent en compte sous cinq minutes (le navigateur garde le script aussi longtemps).",
    },
    "settings.unchanged": {"en": "Nothing to change.", "fr": "Rien à modifier."},
    "settings.not_saved": {
        "en": "Nothing was saved: correct the fields marked below.",
        "fr": "Rien n'a été enregistré : corrigez les champs signalés ci-dessous.",
    },
    "settings.err_timezone": {
        "en": "Unknown time zone: use an IANA name such as Europe/Paris.",
        "fr": "Fuseau horaire inconnu : utilisez un nom IANA comme Europe/Paris.",
    },
    "settings.err_range": {
        "en": "Write time ranges like 09:00-12:30, 14:00-18:00 (24-hour clock).",
        "fr": "Écrivez des plages comme 09:00-12:30, 14:00-18:00 (format 24 h).",
    },
    "settings.err_no_hours": {
        "en": "Enter hours for at least one day, or tick “Always open”.",
        "fr": "Indiquez des horaires pour au moins un jour, ou cochez « Toujours ouvert ».",
    },
    "settings.day.mon": {"en": "Monday", "fr": "Lundi"},
    "settings.day.tue": {"en": "Tuesday", "fr": "Mardi"},
    "settings.day.wed": {"en": "Wednesday", "fr": "Mercredi"},
    "settings.day.thu": {"en": "Thursday", "fr": "Jeudi"},
    "settings.day.fri": {"en": "Friday", "fr": "Vendredi"},
    "settings.day.sat": {"en": "Saturday", "fr": "Samedi"},
    "settings.day.sun": {"en": "Sunday", "fr": "Dimanche"},
    # Users (admins) and one's own profile (dashboard/users_http.py).
    "users.title": {"en": "Users", "fr": "Utilisateurs"},
    "users.list": {"en": "Users of this account", "fr": "Utilisateurs de ce compte"},
    "users.add": {"en": "Add a user", "fr": "Ajouter un utilisateur"},
    "users.add_button": {"en": "Add the user", "fr": "Ajouter l'utilisateur"},
    "users.add_hint": {
        "en": "Give the new user their password yourself; they can change it under their email, top right.",
        "fr": "Transmettez vous-même le mot de passe ; l'utilisateur peut le changer depuis son e-mail, en haut à droite.",
    },
    "users.role": {"en": "Role", "fr": "Rôle"},
    "users.language": {"en": "Language", "fr": "Langue"},
    "users.phone": {"en": "Phone for callbacks", "fr": "Téléphone pour les rappels"},
    "users.status": {"en": "Status", "fr": "État"},
    "users.created": {"en": "Created", "fr": "Créé le"},
    "users.status_line": {
        "en": "Status: {status} · created {date}",
        "fr": "État : {status} · créé le {date}",
    },
    "users.role_line": {"en": "Role: {role}", "fr": "Rôle : {role}"},
    "users.active": {"en": "Active", "fr": "Actif"},
    "users.disabled_since": {"en": "Disabled since {date}", "fr": "Désactivé depuis le {date}"},
    "users.you": {"en": "you", "fr": "vous"},
    "users.roles_hint": {
        "en": "Admin: everything. Marketer: reports, exports, numbers. Advisor: the console. DPO: the privacy tools.",
        "fr": "Admin : tout. Marketeur : rapports, exports, numéros. Conseiller : la console. DPO : les outils de confidentialité.",
    },
    "users.role.admin": {"en": "Admin", "fr": "Admin"},
    "users.role.marketer": {"en": "Marketer", "fr": "Marketeur"},
    "users.role.advisor": {"en": "Advisor", "fr": "Conseiller"},
    "users.role.dpo": {"en": "DPO", "fr": "DPO"},
    "users.language.en": {"en": "English", "fr": "Anglais"},
    "users.language.fr": {"en": "French", "fr": "Français"},
    "users.phone_hint": {
        "en": "The phone that rings first when this person calls a visitor back from the console. Optional.",
        "fr": "Le téléphone qui sonne d'abord quand cette personne rappelle un visiteur depuis la console. Facultatif.",
    },
    "users.phone_region": {
        "en": "Numbers without +country code are read as {country} numbers.",
        "fr": "Un numéro sans indicatif +pays est lu comme un numéro {country}.",
    },
    "users.current_password": {"en": "Current password", "fr": "Mot de passe actuel"},
    "users.new_password": {"en": "New password", "fr": "Nouveau mot de passe"},
    "users.password_again": {"en": "New password, again", "fr": "Nouveau mot de passe, à nouveau"},
    "users.password_hint": {"en": " (at least {n} characters)", "fr": " (au moins {n} caractères)"},
    "users.err_password": {
        "en": "Use at least {n} characters (at most {most}).",
        "fr": "Utilisez au moins {n} caractères (au plus {most}).",
    },
    "users.err_password_again": {
        "en": "The two passwords differ.",
        "fr": "Les deux mots de passe diffèrent.",
    },
    "users.err_phone": {
        "en": "Not a valid phone number. Write it as +33 6 12 34 56 78, or leave it empty.",
        "fr": "Numéro de téléphone invalide. Écrivez-le comme +33 6 12 34 56 78, ou laissez vide.",
    },
    "users.err_email": {
        "en": "Enter a valid email address.",
        "fr": "Saisissez une adresse e-mail valide.",
    },
    "users.err_role": {"en": "Choose a role.", "fr": "Choisissez un rôle."},
    "users.err_duplicate": {
        "en": "A user with this email already exists.",
        "fr": "Un utilisateur avec cet e-mail existe déjà.",
    },
    "users.done_created": {"en": "The user was added.", "fr": "L'utilisateur a été ajouté."},
    "users.done_created_named": {"en": "{email} was added.", "fr": "{email} a été ajouté."},
    "users.done_saved": {
        "en": "Saved. A new role signs the user out everywhere: they sign in again to get it.",
        "fr": "Enregistré. Un nouveau rôle déconnecte l'utilisateur partout : il se reconnecte pour l'obtenir.",
    },
    "users.done_saved_own": {"en": "Saved.", "fr": "Enregistré."},
    "users.done_disabled": {
        "en": "Disabled: signed out everywhere, and signing in is refused.",
        "fr": "Désactivé : déconnecté partout, et la connexion est refusée.",
    },
    "users.done_enabled": {
        "en": "Enabled: they can sign in again.",
        "fr": "Réactivé : la connexion est de nouveau possible.",
    },
    "users.done_password": {
        "en": "New password set; the user was signed out everywhere.",
        "fr": "Nouveau mot de passe enregistré ; l'utilisateur a été déconnecté partout.",
    },
    "users.unknown": {
        "en": "No such user in your account.",
        "fr": "Aucun utilisateur de ce type dans votre compte.",
    },
    "users.own_role": {
        "en": "You cannot change your own role; another admin can.",
        "fr": "Vous ne pouvez pas changer votre propre rôle ; un autre admin le peut.",
    },
    "users.details": {"en": "Details", "fr": "Informations"},
    "users.role_change_hint": {
        "en": "Changing the role signs the user out everywhere.",
        "fr": "Changer le rôle déconnecte l'utilisateur partout.",
    },
    "users.own_access": {
        "en": "You cannot disable yourself; another admin can.",
        "fr": "Vous ne pouvez pas vous désactiver vous-même ; un autre admin le peut.",
    },
    "users.disable_hint": {
        "en": "For someone who left: signs them out everywhere (open consoles close) and refuses their sign-in. Their calls and notes stay.",
        "fr": "Pour une personne partie : la déconnecte partout (les consoles ouvertes se ferment) et refuse sa connexion. Ses appels et notes restent.",
    },
    "users.disable": {"en": "Disable this user", "fr": "Désactiver cet utilisateur"},
    "users.enable": {"en": "Enable this user", "fr": "Réactiver cet utilisateur"},
    "users.access": {"en": "Access", "fr": "Accès"},
    "users.set_password": {"en": "Set a new password", "fr": "Définir un nouveau mot de passe"},
    "users.set_password_hint": {
        "en": "For someone who forgot theirs. It signs them out everywhere; give them the new one yourself.",
        "fr": "Pour qui a oublié le sien. L'utilisateur est déconnecté partout ; transmettez-lui le nouveau vous-même.",
    },
    "users.back": {"en": "All users", "fr": "Tous les utilisateurs"},
    "profile.title": {"en": "Your profile", "fr": "Votre profil"},
    "profile.ask_admin": {
        "en": "An admin of your account can change your role.",
        "fr": "Un admin de votre compte peut changer votre rôle.",
    },
    "profile.phone_hint": {
        "en": "The phone that rings first when you call a visitor back from the console.",
        "fr": "Le téléphone qui sonne d'abord quand vous rappelez un visiteur depuis la console.",
    },
    "profile.password": {"en": "Change your password", "fr": "Changer votre mot de passe"},
    "profile.password_hint": {
        "en": "Your other browsers are signed out; this one stays signed in.",
        "fr": "Vos autres navigateurs sont déconnectés ; celui-ci reste connecté.",
    },
    "profile.done_password": {
        "en": "Password changed. Your other browsers were signed out.",
        "fr": "Mot de passe changé. Vos autres navigateurs ont été déconnectés.",
    },
    "profile.err_current": {
        "en": "This is not your current password.",
        "fr": "Ce n'est pas votre mot de passe actuel.",
    },
}


def pick_language(request: web.Request, preferred: str | None = None) -> str:
    """Choose fr or en: explicit `?lang=`, then the user's setting, then Accept-Language."""
    asked = request.query.get("lang")
    if asked in LANGUAGES:
        return asked
    if preferred in LANGUAGES:
        return preferred
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def t(key: str, lang: str) -> str:
    """Translate a key; fall back to English, then to the key itself."""
    entry = TEXTS.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry["en"]
