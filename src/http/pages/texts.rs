//! Every sentence of the link pages, in each language the service speaks (API.md: the
//! page speaks its flow's language). `{}` marks where a masked address or a time goes.
//! The button names are the ones the mails tell people to press (`mail::templates`).

use crate::domain::Locale;

/// A page's heading and first paragraph.
pub type Said = (&'static str, &'static str);

pub struct Texts {
    pub resend_button: &'static str,
    pub report_button: &'static str,

    pub verify: Said,
    pub verify_button: &'static str,
    pub change_current: Said,
    pub change_current_button: &'static str,
    pub change_new: Said,
    pub change_new_button: &'static str,
    pub sent_to: &'static str,

    pub verified: Said,
    pub current_confirmed: Said,
    pub link_went_to: &'static str,
    pub changed: Said,

    /// `{}`: until when changes are frozen.
    pub reported_frozen: Said,
    pub reported_frozen_why: &'static str,
    pub reported_change_new: Said,
    pub reported_sign_up: Said,

    pub resent: Said,
    pub it_went_to: &'static str,

    pub expired: &'static str,
    pub superseded: &'static str,
    pub renewable: &'static str,
    pub finished: Said,
    pub used: Said,
    pub used_pending: &'static str,
    pub unknown_link: Said,
    pub invalid_link: Said,
    pub taken: Said,
    pub undeliverable: Said,
    pub cannot_complete: Said,
    pub broken: Said,

    /// `{}`: how long, then when.
    pub wait_title: &'static str,
    pub wait_cooldown: &'static str,
    pub wait_limited: &'static str,
    pub wait_locked: &'static str,
    pub wait_when: &'static str,

    pub cross_site: Said,
    pub open_from_mail: Said,
    pub no_such_page: Said,
    pub wrong_method: Said,
}

pub fn texts(locale: Locale) -> &'static Texts {
    match locale {
        Locale::En => &EN,
        Locale::Ne => &NE,
    }
}

const EN: Texts = Texts {
    resend_button: "Send me a new link",
    report_button: "This wasn’t me",

    verify: (
        "Confirm your email address",
        "Confirm that this is the email address of your wallet account.",
    ),
    verify_button: "Confirm",
    change_current: (
        "Confirm the change of your email address",
        "A change of your wallet’s email address was requested. Confirm it here; a second link will then go to the new address.",
    ),
    change_current_button: "Confirm the change",
    change_new: (
        "Confirm your new email address",
        "Confirm this address as the new email address of your wallet account.",
    ),
    change_new_button: "Confirm new address",
    sent_to: "This was sent to {}.",

    verified: (
        "Email address confirmed",
        "Thank you: your email address is verified. You can return to the app.",
    ),
    current_confirmed: (
        "Now check your new inbox",
        "Thank you. We sent a link to your new address: open it to finish the change.",
    ),
    link_went_to: "The link went to {}.",
    changed: (
        "Email address changed",
        "Your wallet’s email address has been changed. You can return to the app.",
    ),

    reported_frozen: (
        "Change stopped and account protected",
        "Thank you for telling us. The change was cancelled and its links no longer work. Your email address stays as it was, and no one can ask to change it until {}.",
    ),
    reported_frozen_why: "This gives you time to check your account: someone who is not you may have tried to take it over. If you want to change your address yourself, you can do so after that time.",
    reported_change_new: (
        "Change cancelled",
        "Thank you for telling us. This address will not be added to anyone’s wallet account, and its links no longer work. You do not need to do anything else.",
    ),
    reported_sign_up: (
        "Address removed",
        "Thank you for telling us. The request was cancelled and this address was taken off the account that asked for it. You will get no more mail about it.",
    ),

    resent: (
        "A new link is on its way",
        "We sent a new link. Earlier links no longer work.",
    ),
    it_went_to: "It went to {}.",

    expired: "This link has expired",
    superseded: "This link was replaced",
    renewable: "For your safety, links work only for a short time and only the newest one works. You can get a new link below.",
    finished: (
        "This request is no longer active",
        "It was cancelled, completed or replaced by a newer request. If you still need a link, ask for one in the app.",
    ),
    used: (
        "Already confirmed",
        "This link was already used. Nothing more to do here.",
    ),
    used_pending: "If you did not ask for this, you can still stop it.",
    unknown_link: (
        "Link not found",
        "We do not know this link. Please use the newest link we sent you.",
    ),
    invalid_link: (
        "This link is not valid",
        "The link seems incomplete. Copy the whole link from the email, or use the button in it.",
    ),
    taken: (
        "Address already in use",
        "This email address is already verified for another account, so it cannot be used here.",
    ),
    undeliverable: (
        "We cannot send mail to this address",
        "Mail to this address was refused or reported, so we send it nothing more. Please use another address in the app, or contact support.",
    ),
    cannot_complete: (
        "This request cannot be completed",
        "Please start again from the app.",
    ),
    broken: (
        "Something went wrong",
        "We could not complete this right now. Please try again in a few minutes.",
    ),

    wait_title: "Please wait a moment",
    wait_cooldown: "A new link was sent a moment ago. Please check your inbox (and spam folder) before asking for another.",
    wait_limited: "There were too many requests in a short time.",
    wait_locked: "There were too many failed attempts from your network.",
    wait_when: "You can try again in {}, at {}.",

    cross_site: (
        "Please use the link in your email",
        "This request came from another website, so we did not act on it. Nothing was changed. To confirm or cancel, open the link in the email we sent you.",
    ),
    open_from_mail: (
        "Open the link from your email",
        "This page works only with the link from the email we sent you. Open that email and press its button, or copy the whole link into your browser.",
    ),
    no_such_page: (
        "Page not found",
        "There is no page here. To confirm your email address, open the link in the email we sent you.",
    ),
    wrong_method: (
        "This page cannot be opened this way",
        "Please go back and use the button on the page, or open the link in the email we sent you.",
    ),
};

const NE: Texts = Texts {
    resend_button: "मलाई नयाँ लिङ्क पठाउनुहोस्",
    report_button: "यो मैले गरेको होइन",

    verify: (
        "आफ्नो इमेल ठेगाना पुष्टि गर्नुहोस्",
        "यो इमेल ठेगाना तपाईंको वालेट खाताको हो भनी पुष्टि गर्नुहोस्।",
    ),
    verify_button: "पुष्टि गर्नुहोस्",
    change_current: (
        "इमेल ठेगाना परिवर्तन पुष्टि गर्नुहोस्",
        "तपाईंको वालेटको इमेल ठेगाना परिवर्तन गर्न अनुरोध गरिएको छ। यहाँ पुष्टि गर्नुहोस्। त्यसपछि नयाँ ठेगानामा दोस्रो लिङ्क पठाइनेछ।",
    ),
    change_current_button: "परिवर्तन पुष्टि गर्नुहोस्",
    change_new: (
        "नयाँ इमेल ठेगाना पुष्टि गर्नुहोस्",
        "यो ठेगानालाई तपाईंको वालेट खाताको नयाँ इमेल ठेगानाको रूपमा पुष्टि गर्नुहोस्।",
    ),
    change_new_button: "नयाँ ठेगाना पुष्टि गर्नुहोस्",
    sent_to: "यो लिङ्क {} मा पठाइएको हो।",

    verified: (
        "इमेल ठेगाना पुष्टि भयो",
        "धन्यवाद! तपाईंको इमेल ठेगाना प्रमाणित भयो। अब तपाईं एपमा फर्कन सक्नुहुन्छ।",
    ),
    current_confirmed: (
        "अब नयाँ इमेल ठेगानाको इनबक्स हेर्नुहोस्",
        "धन्यवाद। हामीले तपाईंको नयाँ ठेगानामा लिङ्क पठाएका छौं। परिवर्तन पूरा गर्न त्यो लिङ्क खोल्नुहोस्।",
    ),
    link_went_to: "लिङ्क {} मा पठाइयो।",
    changed: (
        "इमेल ठेगाना परिवर्तन भयो",
        "तपाईंको वालेटको इमेल ठेगाना परिवर्तन गरिएको छ। अब तपाईं एपमा फर्कन सक्नुहुन्छ।",
    ),

    reported_frozen: (
        "परिवर्तन रोकियो, खाता सुरक्षित छ",
        "जानकारी दिनुभएकोमा धन्यवाद। परिवर्तन रद्द गरियो र यसका लिङ्कहरूले अब काम गर्दैनन्। तपाईंको इमेल ठेगाना पहिलेकै रहन्छ, र {} सम्म कसैले पनि यसलाई परिवर्तन गर्न अनुरोध गर्न सक्दैन।",
    ),
    reported_frozen_why: "यसले तपाईंलाई आफ्नो खाता जाँच्ने समय दिन्छ। तपाईंबाहेक अरू कसैले तपाईंको खाता आफ्नो नियन्त्रणमा लिन खोजेको हुन सक्छ। आफैं ठेगाना परिवर्तन गर्न चाहनुहुन्छ भने त्यो समयपछि गर्न सक्नुहुन्छ।",
    reported_change_new: (
        "परिवर्तन रद्द गरियो",
        "जानकारी दिनुभएकोमा धन्यवाद। यो ठेगाना कसैको पनि वालेट खातामा थपिने छैन, र यसका लिङ्कहरूले अब काम गर्दैनन्। तपाईंले अरू केही गर्नुपर्दैन।",
    ),
    reported_sign_up: (
        "ठेगाना हटाइयो",
        "जानकारी दिनुभएकोमा धन्यवाद। अनुरोध रद्द गरियो र यो ठेगाना थप्न अनुरोध गर्ने खाताबाट हटाइयो। यसबारे तपाईंलाई अब कुनै इमेल आउने छैन।",
    ),

    resent: (
        "नयाँ लिङ्क पठाइएको छ",
        "हामीले नयाँ लिङ्क पठाएका छौं। पहिलेका लिङ्कहरूले अब काम गर्दैनन्।",
    ),
    it_went_to: "यो {} मा पठाइयो।",

    expired: "यो लिङ्कको म्याद सकियो",
    superseded: "यो लिङ्कको सट्टा नयाँ लिङ्क पठाइएको छ",
    renewable: "तपाईंको सुरक्षाका लागि, लिङ्कहरू छोटो समयका लागि मात्र चल्छन् र सबैभन्दा नयाँ लिङ्कले मात्र काम गर्छ। तल नयाँ लिङ्क माग्न सक्नुहुन्छ।",
    finished: (
        "यो अनुरोध अब सक्रिय छैन",
        "यो अनुरोध रद्द भइसकेको छ, पूरा भइसकेको छ, वा यसको सट्टा नयाँ अनुरोध आएको छ। अझै लिङ्क चाहिन्छ भने एपबाट माग्नुहोस्।",
    ),
    used: (
        "पहिले नै पुष्टि भइसकेको",
        "यो लिङ्क पहिले नै प्रयोग भइसकेको छ। यहाँ अरू केही गर्नुपर्दैन।",
    ),
    used_pending: "यो अनुरोध तपाईंले गर्नुभएको होइन भने, अझै पनि रोक्न सक्नुहुन्छ।",
    unknown_link: (
        "लिङ्क भेटिएन",
        "यो लिङ्क पहिचान गर्न सकिएन। कृपया हामीले पठाएको सबैभन्दा नयाँ लिङ्क प्रयोग गर्नुहोस्।",
    ),
    invalid_link: (
        "यो लिङ्क मान्य छैन",
        "लिङ्क अधुरो जस्तो देखिन्छ। इमेलबाट पूरै लिङ्क कपी गर्नुहोस्, वा इमेलको बटन थिच्नुहोस्।",
    ),
    taken: (
        "ठेगाना पहिले नै प्रयोगमा छ",
        "यो इमेल ठेगाना अर्को खाताका लागि पहिले नै प्रमाणित छ, त्यसैले यहाँ प्रयोग गर्न मिल्दैन।",
    ),
    undeliverable: (
        "यो ठेगानामा हामी इमेल पठाउन सक्दैनौं",
        "यो ठेगानामा पठाइएको इमेल अस्वीकार वा रिपोर्ट गरियो, त्यसैले हामी यसमा अब केही पठाउँदैनौं। कृपया एपमा अर्को ठेगाना प्रयोग गर्नुहोस्, वा सहायता टोलीसँग सम्पर्क गर्नुहोस्।",
    ),
    cannot_complete: ("यो अनुरोध पूरा गर्न सकिँदैन", "कृपया एपबाट फेरि सुरु गर्नुहोस्।"),
    broken: (
        "केही गडबडी भयो",
        "हामी अहिले यो पूरा गर्न सकेनौं। कृपया केही मिनेटपछि फेरि प्रयास गर्नुहोस्।",
    ),

    wait_title: "कृपया केही बेर पर्खनुहोस्",
    wait_cooldown: "भर्खरै नयाँ लिङ्क पठाइएको छ। अर्को माग्नुअघि आफ्नो इनबक्स (र स्प्याम फोल्डर) हेर्नुहोस्।",
    wait_limited: "छोटो समयमा धेरै अनुरोधहरू आए।",
    wait_locked: "तपाईंको नेटवर्कबाट धेरै पटक असफल प्रयास भयो।",
    wait_when: "{}पछि, {} मा फेरि प्रयास गर्न सक्नुहुन्छ।",

    cross_site: (
        "कृपया आफ्नो इमेलको लिङ्क प्रयोग गर्नुहोस्",
        "यो अनुरोध अर्को वेबसाइटबाट आएकोले हामीले यसमा कुनै कार्य गरेनौं। केही परिवर्तन भएको छैन। पुष्टि वा रद्द गर्न, हामीले पठाएको इमेलको लिङ्क खोल्नुहोस्।",
    ),
    open_from_mail: (
        "आफ्नो इमेलको लिङ्क खोल्नुहोस्",
        "यो पेज हामीले पठाएको इमेलको लिङ्कबाट मात्र चल्छ। त्यो इमेल खोलेर त्यसको बटन थिच्नुहोस्, वा पूरै लिङ्क कपी गरेर ब्राउजरमा पेस्ट गर्नुहोस्।",
    ),
    no_such_page: (
        "पेज भेटिएन",
        "यहाँ कुनै पेज छैन। इमेल ठेगाना पुष्टि गर्न, हामीले पठाएको इमेलको लिङ्क खोल्नुहोस्।",
    ),
    wrong_method: (
        "यो पेज यसरी खोल्न मिल्दैन",
        "कृपया पछाडि गएर पेजको बटन प्रयोग गर्नुहोस्, वा हामीले पठाएको इमेलको लिङ्क खोल्नुहोस्।",
    ),
};
